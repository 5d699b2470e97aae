"""Training jobs: a spec applied to a base model and a dataset version, executed as a background run."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

from sqlalchemy import JSON, ForeignKey, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.db.base import Base, IdMixin, TimestampMixin

if TYPE_CHECKING:
    from app.db.models.base_model import BaseModelRecord
    from app.db.models.dataset import DatasetVersion
    from app.db.models.run import Run


class TrainingJob(IdMixin, TimestampMixin, Base):
    __tablename__ = "training_jobs"

    owner_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(200), nullable=False)
    base_model_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("base_models.id", ondelete="RESTRICT"))
    # None for an adapter uploaded rather than trained here (origin "upload")
    dataset_version_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("dataset_versions.id", ondelete="RESTRICT"), nullable=True
    )
    # "trained" (a job run here) or "upload" (an existing PEFT adapter imported and checked by a run)
    origin: Mapped[str] = mapped_column(String(20), nullable=False, default="trained", server_default="trained")
    general_version_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("dataset_versions.id", ondelete="RESTRICT"), nullable=True
    )
    # a separate dataset version whose records are all used for validation (OpenAI's validation_file)
    validation_version_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("dataset_versions.id", ondelete="RESTRICT"), nullable=True
    )
    spec: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)
    # OpenAI's job metadata: up to 16 string pairs the caller attaches and filters the job list by
    job_metadata: Mapped[dict[str, str] | None] = mapped_column("metadata", JSON, nullable=True)
    # free labels for the adapter registry ("prod", "support-bot", …)
    tags: Mapped[list[str]] = mapped_column(JSON, nullable=False, default=list, server_default="[]")
    # the latest run merging the adapter into its base (merged/ in the job's storage)
    merge_run_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("runs.id", ondelete="SET NULL"), nullable=True)
    run_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("runs.id", ondelete="SET NULL"), nullable=True)
    # where the job's files live in the artifact store: checkpoints/, final/, metrics.jsonl
    storage_key: Mapped[str] = mapped_column(String(200), nullable=False)
    cloned_from_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("training_jobs.id", ondelete="SET NULL"), nullable=True
    )
    # resumed from a complete checkpoint ("checkpoint-N") of the job it was cloned from
    resume_checkpoint: Mapped[str | None] = mapped_column(String(40), nullable=True)

    # Relationships never load by themselves (lazy="raise"): a list or page that shows them says so in its
    # query (selectinload), so a list costs a fixed number of queries whatever its length.
    base_model: Mapped[BaseModelRecord] = relationship(lazy="raise")
    dataset_version: Mapped[DatasetVersion | None] = relationship(foreign_keys=[dataset_version_id], lazy="raise")
    run: Mapped[Run | None] = relationship(foreign_keys=[run_id], lazy="raise")


class TrainingPreset(IdMixin, TimestampMixin, Base):
    """A named spec a user saved from the form to start later jobs from."""

    __tablename__ = "training_presets"
    __table_args__ = (UniqueConstraint("owner_id", "name"),)

    owner_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(100), nullable=False)
    spec: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)
