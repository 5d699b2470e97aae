"""Evaluation: the child (worker/evaluation/evaluate.py) writes the report; the summary is copied to the row."""

from __future__ import annotations

import json
import sys
import uuid
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.datasets.storage import artifact_path
from app.db.models import BaseModelRecord, DatasetVersion, Evaluation, Run, TrainingJob
from app.db.session import session_scope
from app.deployments.service import settle as settle_promotions
from app.evaluation.judges import judge_after_evaluation
from app.evaluation.service import EVAL_KIND, PROBE_PATH
from app.jobs import tracking
from app.runs.service import add_event

KIND = EVAL_KIND


class EvaluationHandler:
    def argv(self, run_id: uuid.UUID, params: dict[str, Any], attempt: int) -> list[str]:
        with session_scope() as session:
            evaluation = session.get(Evaluation, uuid.UUID(params["evaluation_id"]))
            job = session.get(TrainingJob, evaluation.job_id) if evaluation else None
            if evaluation is None or job is None:
                raise ValueError("The evaluation or its training job has been deleted.")
            model = session.get(BaseModelRecord, job.base_model_id)
            version = session.get(DatasetVersion, evaluation.dataset_version_id)
            # an uploaded adapter has no training data: few-shot examples come from the evaluated version's train split
            trained_on = session.get(DatasetVersion, job.dataset_version_id) if job.dataset_version_id else version
            if model is None or version is None or trained_on is None or not model.storage_key:
                raise ValueError("The base model or a dataset version of this evaluation no longer exists.")
            spec = {
                "options": {**evaluation.options, "max_length": job.spec.get("max_seq_length", 1024)},
                "model_dir": str(artifact_path(model.storage_key)),
                "chat_template": model.chat_template,
                "adapter_dir": str(artifact_path(f"{job.storage_key}/final")),
                "records_path": str(artifact_path(version.storage_key)),
                "train_records_path": str(artifact_path(trained_on.storage_key)),
                "probe_path": str(PROBE_PATH),
                "output_dir": str(artifact_path(evaluation.storage_key)),
                # the base model's numbers, kept for the next evaluation of the same data (evaluate.BaseCache)
                "base_cache_dir": str(artifact_path(f"eval-cache/{model.id.hex}")),
            }
        return [sys.executable, "-m", "worker.evaluation.evaluate", json.dumps(spec)]

    def on_success(self, session: Session, run_id: uuid.UUID, result: dict[str, Any]) -> None:
        evaluation = session.scalar(select(Evaluation).where(Evaluation.run_id == run_id))
        if evaluation is not None:
            evaluation.summary = result
            job = session.get(TrainingJob, evaluation.job_id)
            trained = session.get(Run, job.run_id) if job else None
            if trained is not None and trained.result:
                down = tracking.log_evaluation(trained.result, result, int(trained.result.get("steps") or 0))
                if down:
                    add_event(session, run_id, "tracker_down", {"tracker": "MLflow", "detail": down}, level="warning")
            judge_after_evaluation(session, evaluation)
            settle_promotions(session, evaluation)  # a deployment's gate may have been waiting for it


HANDLER = EvaluationHandler()
