"""Merging an adapter into its base: the child (worker/export/merge.py) writes merged/; the parent adds the
model card."""

from __future__ import annotations

import json
import sys
import uuid
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.adapters.service import MERGE_KIND, merged_dir
from app.datasets.storage import artifact_path
from app.db.models import BaseModelRecord, TrainingJob
from app.db.session import session_scope
from app.jobs import files as job_files
from app.jobs.card import model_card

KIND = MERGE_KIND


class MergeHandler:
    def argv(self, run_id: uuid.UUID, params: dict[str, Any], attempt: int) -> list[str]:
        with session_scope() as session:
            job = session.get(TrainingJob, uuid.UUID(params["job_id"]))
            model = session.get(BaseModelRecord, job.base_model_id) if job else None
            if job is None or model is None or not model.storage_key:
                raise ValueError("The training job or its base model has been deleted.")
            spec = {
                "model_dir": str(artifact_path(model.storage_key)),
                "adapter_dir": str(job_files.final_dir(job)),
                "chat_template": model.chat_template,
                "output_dir": str(merged_dir(job)),
            }
        return [sys.executable, "-m", "worker.export.merge", json.dumps(spec)]

    def on_success(self, session: Session, run_id: uuid.UUID, result: dict[str, Any]) -> None:
        job = session.scalar(select(TrainingJob).where(TrainingJob.merge_run_id == run_id))
        if job is not None:
            (merged_dir(job) / "README.md").write_text(model_card(session, job, merged=True))


HANDLER = MergeHandler()
