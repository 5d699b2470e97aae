from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from app.jobs.spec import TrainingSpec
from app.runs.schemas import RunRead


class JobCreate(BaseModel):
    name: str = Field(default="", max_length=200, description="Display name (defaults to model · dataset).")
    model_id: uuid.UUID = Field(description="A ready base model.")
    dataset_version_id: uuid.UUID = Field(description="The dataset version to train on (its train split).")
    general_version_id: uuid.UUID | None = Field(
        default=None, description="Continued pre-training: a dataset version of general text to mix in."
    )
    spec: TrainingSpec = Field(default_factory=TrainingSpec, description="Method, adapter and hyper-parameters.")


class JobResume(BaseModel):
    checkpoint: str = Field(max_length=40, description="A complete checkpoint of the job, e.g. checkpoint-50.")
    name: str = Field(default="", max_length=200, description="Display name of the new job.")
    spec: TrainingSpec | None = Field(
        default=None,
        description="Changed hyper-parameters (same method and adapter); defaults to the job's own spec.",
    )


class CheckpointRead(BaseModel):
    name: str
    step: int
    loss: float | None
    eval_loss: float | None
    size_bytes: int


class PresetCreate(BaseModel):
    name: str = Field(min_length=1, max_length=100)
    spec: TrainingSpec


class PresetRead(BaseModel):
    id: str = Field(description="A built-in preset's key, or the id of one of yours.")
    name: str
    builtin: bool
    spec: dict[str, Any]


class JobRead(BaseModel):
    id: uuid.UUID
    name: str
    model_id: uuid.UUID
    dataset_version_id: uuid.UUID | None = Field(description="None for an uploaded adapter (origin 'upload').")
    origin: str = "trained"
    general_version_id: uuid.UUID | None
    spec: dict[str, Any]
    created_at: datetime
    status: str = Field(description="validating, queued, running, succeeded, failed or cancelled.")
    run: RunRead
    adapter_available: bool
    cloned_from_id: uuid.UUID | None = None
    resume_checkpoint: str | None = None


class MetricRow(BaseModel):
    step: int
    epoch: float | None = None
    time: float | None = None
    loss: float | None = None
    eval_loss: float | None = None
    learning_rate: float | None = None
    grad_norm: float | None = None
    tokens_per_second: float | None = None


class EstimateRequest(BaseModel):
    model_id: uuid.UUID
    dataset_version_id: uuid.UUID
    spec: TrainingSpec = Field(default_factory=TrainingSpec)
    gpu_gib: float = Field(default=24, gt=0, le=10_000, description="The GPU's memory to fit in, in GiB.")


class EstimateRead(BaseModel):
    memory: dict[str, float] = Field(description="GiB by part: weights, gradients, optimizer, activations, …")
    trainable: int
    fits: bool
    gpu_gib: float
    cpu_memory_gib: float | None = Field(
        default=None, description="RAM a CPU worker needs for it (measured model), while no GPU workers are set."
    )
    suggestion: dict[str, Any] | None = Field(description="Changes that would fit, when it does not.")
    tokens: int = Field(description="Tokens the job will train on.")
    rate: float | None = Field(description="Measured tokens per second of earlier jobs on this model.")
    seconds: float | None
    problems: list[dict[str, str]] = Field(description="What would refuse the job, by field.")
    warnings: list[dict[str, str]] = Field(
        default_factory=list, description="What would run but looks wrong (a learning rate far off), by field."
    )


class ComparisonRead(BaseModel):
    jobs: list[uuid.UUID]
    statuses: list[str]
    models: list[str]
    datasets: list[str]
    differing: dict[str, list[Any]] = Field(description="The spec fields that differ, with each job's value.")
    results: dict[str, list[Any]] = Field(description="Final metrics, one value per job.")
    curves: list[dict[str, Any]] = Field(description="Each job's loss and eval-loss points, [step, value].")
