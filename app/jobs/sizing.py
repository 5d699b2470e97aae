"""The estimate shown before launch: a spec's peak memory on the model (app/jobs/estimate.py's arithmetic),
whether it fits, a smaller configuration that would, and the time at the throughput measured on this model."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.core.config import get_settings
from app.datasets.storage import artifact_path
from app.db.models import BaseModelRecord, DatasetVersion, Run, RunStatus, TrainingJob, User
from app.jobs.estimate import GIB, ModelShape, estimate_memory, smaller_configuration
from app.jobs.service import problems_for
from app.jobs.spec import Problem, TrainingSpec, learning_rate_warning


def model_shape(model: BaseModelRecord) -> ModelShape:
    config_path = artifact_path(f"{model.storage_key}/config.json") if model.storage_key else None
    config = json.loads(config_path.read_text()) if config_path and config_path.is_file() else {}
    return ModelShape(
        parameters=model.num_parameters or 0,
        hidden_size=int(config.get("hidden_size", 768)),
        layers=int(config.get("num_hidden_layers", 12)),
        vocab_size=int(config.get("vocab_size", 32000)),
        intermediate_size=config.get("intermediate_size"),
    )


def measured_tokens_per_second(session: Session, model: BaseModelRecord) -> float | None:
    """Throughput of earlier finished jobs on the same model (the basis of the time estimate)."""
    stmt = (
        select(Run.result)
        .join(TrainingJob, TrainingJob.run_id == Run.id)
        .where(TrainingJob.base_model_id == model.id, Run.status == RunStatus.succeeded)
    )
    rates = [
        r["tokens_seen"] / r["seconds"]
        for r in session.scalars(stmt)
        if r and r.get("tokens_seen") and r.get("seconds")
    ]
    return sum(rates) / len(rates) if rates else None


@dataclass(frozen=True)
class Estimate:
    memory: dict[str, float]  # GiB by part: weights, gradients, optimizer, activations, overhead, total
    trainable: int
    fits: bool
    gpu_gib: float
    cpu_memory_gib: float | None  # what a CPU worker's RAM must hold, shown while no GPU workers are set
    suggestion: dict[str, Any] | None  # {"changes": {field: value}, "total": GiB} when it does not fit
    tokens: int
    rate: float | None
    seconds: float | None
    problems: list[Problem]
    warnings: list[Problem]


def estimate(
    session: Session,
    spec: TrainingSpec,
    *,
    model: BaseModelRecord,
    version: DatasetVersion,
    gpu_gib: float,
    user: User,
) -> Estimate:
    shape = model_shape(model)
    memory = estimate_memory(spec, shape, gpu=True)
    budget = gpu_gib * GIB
    suggestion = None
    if memory.total > budget:
        smaller = smaller_configuration(spec, shape, budget)
        if smaller is not None:
            changed = {k: v for k, v in smaller.model_dump(mode="json").items() if v != spec.model_dump(mode="json")[k]}
            suggestion = {"changes": changed, "total": round(estimate_memory(smaller, shape).total / GIB, 2)}
    mean_tokens = ((version.stats or {}).get("tokens") or {}).get("mean") or 0
    tokens = int(mean_tokens * version.split_counts.get("train", 0))
    if spec.max_steps:
        tokens = min(tokens, int(spec.max_steps * spec.effective_batch * (mean_tokens or spec.max_seq_length)))
        epochs = 1.0
    else:
        epochs = spec.num_epochs
    rate = measured_tokens_per_second(session, model)
    on_cpu = None if get_settings().gpu_workers else round(estimate_memory(spec, shape, gpu=False).total / GIB, 1)
    return Estimate(
        memory=memory.as_gib(),
        trainable=memory.trainable_parameters,
        fits=memory.total <= budget,
        gpu_gib=gpu_gib,
        cpu_memory_gib=on_cpu,
        suggestion=suggestion,
        tokens=int(tokens * epochs),
        rate=rate,
        seconds=(tokens * epochs / rate) if rate else None,
        problems=problems_for(session, spec, model=model, version=version, user=user),
        warnings=[w for w in (learning_rate_warning(spec),) if w is not None],
    )
