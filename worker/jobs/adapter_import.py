"""Checking an uploaded adapter: the child (worker/export/adapter_check.py) loads it onto its base; the job's
final/ is listed as an adapter once this run has succeeded."""

from __future__ import annotations

import json
import sys
import uuid
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.adapters.upload import IMPORT_KIND
from app.datasets.storage import artifact_path
from app.db.models import BaseModelRecord, TrainingJob
from app.db.session import session_scope
from app.jobs import files as job_files
from app.jobs.card import model_card

KIND = IMPORT_KIND


class AdapterImportHandler:
    def argv(self, run_id: uuid.UUID, params: dict[str, Any], attempt: int) -> list[str]:
        with session_scope() as session:
            job = session.get(TrainingJob, uuid.UUID(params["job_id"]))
            model = session.get(BaseModelRecord, job.base_model_id) if job else None
            if job is None or model is None or not model.storage_key:
                raise ValueError("The adapter or its base model has been deleted.")
            spec = {"model_dir": str(artifact_path(model.storage_key)), "adapter_dir": str(job_files.final_dir(job))}
        return [sys.executable, "-m", "worker.export.adapter_check", json.dumps(spec)]

    def on_success(self, session: Session, run_id: uuid.UUID, result: dict[str, Any]) -> None:
        job = session.scalar(select(TrainingJob).where(TrainingJob.run_id == run_id))
        if job is not None:
            (job_files.final_dir(job) / "README.md").write_text(model_card(session, job))


HANDLER = AdapterImportHandler()
