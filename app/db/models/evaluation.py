"""Evaluations: a trained job's model against its base model on a dataset version's test split."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import JSON, ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from app.db.base import Base, IdMixin, TimestampMixin


class Evaluation(IdMixin, TimestampMixin, Base):
    __tablename__ = "evaluations"

    owner_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    job_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("training_jobs.id", ondelete="CASCADE"), index=True)
    dataset_version_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("dataset_versions.id", ondelete="RESTRICT"))
    # sample size, generation length, few-shot examples, probe size, seed
    options: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)
    run_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("runs.id", ondelete="SET NULL"), nullable=True)
    # report.json and samples.jsonl live under this key in the artifact store
    storage_key: Mapped[str] = mapped_column(String(200), nullable=False)
    # the report's headline numbers, copied here when the run succeeds (for lists and comparisons)
    summary: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
