"""Training: the child trains (worker/training/train.py); the run's result holds the final metrics."""

from __future__ import annotations

import json
import uuid
from typing import Any

from sqlalchemy.orm import Session

from app.core.config import get_settings
from app.datasets.storage import artifact_path
from app.db.models import BaseModelRecord, Dataset, DatasetVersion, Run, RunStatus, TrainingJob
from app.db.session import session_scope
from app.jobs import tracking
from app.jobs.card import model_card
from app.jobs.service import TRAIN_KIND
from app.jobs.spec import TrainingSpec
from app.runs.service import add_event
from worker.training.distributed import launch_argv

KIND = TRAIN_KIND


def _mix_paths(session: Any, parts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The records file and ratio of each dataset version mixed into the job (TrainingSpec.mix)."""
    out = []
    for part in parts:
        version = session.get(DatasetVersion, uuid.UUID(str(part["version_id"])))
        if version is None or not version.storage_key:
            raise ValueError("A dataset version mixed into this job no longer exists.")
        out.append({"path": str(artifact_path(version.storage_key)), "ratio": float(part["ratio"])})
    return out


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
            held_out = session.get(DatasetVersion, job.validation_version_id) if job.validation_version_id else None
            spec = {
                "spec": job.spec,
                "model_dir": str(artifact_path(model.storage_key)),
                "chat_template": model.chat_template,
                "records_path": str(artifact_path(version.storage_key)),
                "general_records_path": str(artifact_path(general.storage_key)) if general else None,
                "mix": _mix_paths(session, job.spec.get("mix") or []),
                "eval_records_path": str(artifact_path(held_out.storage_key)) if held_out else None,
                "output_dir": str(artifact_path(f"{job.storage_key}/checkpoints")),
                "final_dir": str(artifact_path(f"{job.storage_key}/final")),
                "metrics_path": str(artifact_path(f"{job.storage_key}/metrics.jsonl")),
                "reward": _reward_model(session, job.spec.get("reward_job_id") or ""),
                "resume_from": _resume_source(session, job),
                "start_adapter_dir": _start_adapter(session, job.spec.get("start_from_job_id") or ""),
            }
            spec["tracking"] = _tracking(session, job, model, version)
            storage_key = job.storage_key
            training_spec = TrainingSpec.model_validate(job.spec)
        artifact_path(storage_key).mkdir(parents=True, exist_ok=True)
        return launch_argv(
            training_spec,
            json.dumps(spec),
            artifact_path(f"{storage_key}/accelerate.yaml"),
            cuda=get_settings().gpu_workers,
        )

    def on_success(self, session: Session, run_id: uuid.UUID, result: dict[str, Any]) -> None:
        """The run keeps the result and the adapter is in the job's final/ directory; an evaluation against
        the base model on the version's test split starts by itself."""
        from sqlalchemy import select

        from app.evaluation.service import evaluate_after_training

        job = session.scalar(select(TrainingJob).where(TrainingJob.run_id == run_id))
        if job is not None:
            down = tracking.finish_training(artifact_path(f"{job.storage_key}/final"), model_card(session, job), result)
            if down:
                add_event(session, run_id, "tracker_down", {"tracker": "MLflow", "detail": down}, level="warning")
            evaluate_after_training(session, job)


def _tracking(session: Session, job: TrainingJob, model: BaseModelRecord, version: DatasetVersion) -> dict[str, Any]:
    """What the child's trackers need: TensorBoard's directory always; MLflow's server, experiment and run name
    when a tracking URI is set for the install or the job."""
    dataset = session.get(Dataset, version.dataset_id)
    params = tracking.flat(job.spec) | {
        "base_model": model.name,
        "dataset": dataset.name if dataset else "",
        "dataset_version": str(version.number),
    }
    uri, guarded = tracking.tracking_uri(job.spec)
    mlflow = None
    if uri:
        mlflow = {
            "uri": uri,
            "guarded": guarded,
            "experiment": job.spec.get("mlflow_experiment") or (dataset.name if dataset else "refinery"),
            "run_name": job.name,
            "job_url": tracking.job_url(job.id),
            "job_id": str(job.id),
        }
    return {
        "job_dir": str(artifact_path(job.storage_key)),
        "tensorboard_dir": str(artifact_path(f"{job.storage_key}/tensorboard")),
        "params": params,
        "mlflow": mlflow,
    }


def _start_adapter(session: Session, start_from_job_id: str) -> str | None:
    """The adapter a job trains further (checked when the job was made; gone since: the child says so)."""
    if not start_from_job_id:
        return None
    start = session.get(TrainingJob, uuid.UUID(start_from_job_id))
    return str(artifact_path(f"{start.storage_key}/final")) if start is not None else "/nonexistent"


def _resume_source(session: Session, job: TrainingJob) -> dict[str, str] | None:
    source = session.get(TrainingJob, job.cloned_from_id) if job.resume_checkpoint and job.cloned_from_id else None
    if source is None or job.resume_checkpoint is None:
        return None
    return {
        "checkpoint_dir": str(artifact_path(f"{source.storage_key}/checkpoints/{job.resume_checkpoint}")),
        "metrics_path": str(artifact_path(f"{source.storage_key}/metrics.jsonl")),
    }


def _reward_model(session: Session, reward_job_id: str) -> dict[str, str] | None:
    """Where the reward model of an RLHF job lives (None: the child fails with a sentence saying so)."""
    if not reward_job_id:
        return None
    try:
        reward_job = session.get(TrainingJob, uuid.UUID(reward_job_id))
    except ValueError:
        return None
    run = session.get(Run, reward_job.run_id) if reward_job and reward_job.run_id else None
    model = session.get(BaseModelRecord, reward_job.base_model_id) if reward_job else None
    if reward_job is None or run is None or run.status != RunStatus.succeeded or model is None or not model.storage_key:
        return None
    return {
        "model_dir": str(artifact_path(model.storage_key)),
        "final_dir": str(artifact_path(f"{reward_job.storage_key}/final")),
    }


HANDLER = TrainingHandler()
