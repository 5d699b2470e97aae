"""GGUF export: the child (worker/export/gguf_export.py) writes gguf/<format>/; the parent adds the model card."""

from __future__ import annotations

import json
import sys
import uuid
from typing import Any

from sqlalchemy.orm import Session

from app.adapters import exports
from app.adapters.service import merged_dir, merged_ready
from app.datasets.storage import artifact_path
from app.db.models import BaseModelRecord, Run, TrainingJob
from app.db.session import session_scope
from app.jobs import files as job_files
from app.jobs.card import model_card

KIND = exports.GGUF_KIND


class GgufExportHandler:
    def argv(self, run_id: uuid.UUID, params: dict[str, Any], attempt: int) -> list[str]:
        with session_scope() as session:
            job = session.get(TrainingJob, uuid.UUID(params["job_id"]))
            model = session.get(BaseModelRecord, job.base_model_id) if job else None
            if job is None or model is None or not model.storage_key:
                raise ValueError("The training job or its base model has been deleted.")
            source = model.source_ref or ""
            spec = {
                "format": params["format"],
                "name": job.name,
                "adapter": job.spec.get("adapter"),
                "model_dir": str(artifact_path(model.storage_key)),
                "adapter_dir": str(job_files.final_dir(job)),
                "merged_dir": str(merged_dir(job)) if merged_ready(job) else None,
                "chat_template": model.chat_template,
                "source_gguf": source if source.endswith(".gguf") else None,
                "output_dir": str(exports.gguf_dir(job, params["format"])),
            }
        return [sys.executable, "-m", "worker.export.gguf_export", json.dumps(spec)]

    def on_success(self, session: Session, run_id: uuid.UUID, result: dict[str, Any]) -> None:
        run = session.get(Run, run_id)
        job = session.get(TrainingJob, uuid.UUID(run.params["job_id"])) if run else None
        if job is not None:
            directory = exports.gguf_dir(job, str(result.get("format")))
            (directory / "README.md").write_text(model_card(session, job, merged=result.get("format") != "lora"))
            (directory / "export.json").write_text(json.dumps(result))


HANDLER = GgufExportHandler()
