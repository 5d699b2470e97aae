"""Training: the child trains (worker/training/train.py); the run's result holds the final metrics."""

from __future__ import annotations

import json
import sys
import uuid
from typing import Any

from sqlalchemy.orm import Session

from app.datasets.storage import artifact_path
from app.db.models import BaseModelRecord, DatasetVersion, TrainingJob
from app.db.session import session_scope
from app.jobs.service import TRAIN_KIND

KIND = TRAIN_KIND


class TrainingHandler:
    def argv(self, run_id: uuid.UUID, params: dict[str, Any], attempt: int) -> list[str]:
        with session_scope() as session:
            job = session.get(TrainingJob, uuid.UUID(params["job_id"]))
            if job is None:
                raise ValueError("The training job has been deleted.")
            model = session.get(BaseModelRecord, job.base_model_id)
            version = session.get(DatasetVersion, job.dataset_version_id)
            if model is None or version is None or not model.storage_key:
                raise ValueError("The base model or dataset version of this job no longer exists.")
            general = session.get(DatasetVersion, job.general_version_id) if job.general_version_id else None
            spec = {
                "spec": job.spec,
                "model_dir": str(artifact_path(model.storage_key)),
                "chat_template": model.chat_template,
                "records_path": str(artifact_path(version.storage_key)),
                "general_records_path": str(artifact_path(general.storage_key)) if general else None,
                "output_dir": str(artifact_path(f"{job.storage_key}/checkpoints")),
                "final_dir": str(artifact_path(f"{job.storage_key}/final")),
                "metrics_path": str(artifact_path(f"{job.storage_key}/metrics.jsonl")),
            }
        artifact_path(job.storage_key).mkdir(parents=True, exist_ok=True)
        return [sys.executable, "-m", "worker.training.train", json.dumps(spec)]

    def on_success(self, session: Session, run_id: uuid.UUID, result: dict[str, Any]) -> None:
        """The run keeps the result; the adapter is in the job's final/ directory."""


HANDLER = TrainingHandler()
