"""Evaluations: a trained job's model against its base model on a dataset version's test split."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

from sqlalchemy import JSON, ForeignKey, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.db.base import Base, IdMixin, TimestampMixin

if TYPE_CHECKING:
    from app.db.models.dataset import DatasetVersion
    from app.db.models.job import TrainingJob
    from app.db.models.run import Run


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

    job: Mapped[TrainingJob] = relationship(lazy="raise")
    dataset_version: Mapped[DatasetVersion] = relationship(lazy="raise")
    run: Mapped[Run | None] = relationship(lazy="raise")


class Judge(IdMixin, TimestampMixin, Base):
    """A model that grades answers, set up by an administrator and usable by everyone: any OpenAI-compatible
    endpoint (``endpoint``) or one of the imported base models served by our inference process (``local``)."""

    __tablename__ = "judges"

    name: Mapped[str] = mapped_column(String(100), unique=True, nullable=False)
    kind: Mapped[str] = mapped_column(String(16), nullable=False)
    url: Mapped[str | None] = mapped_column(String(500), nullable=True)  # the base URL, ending before /chat
    model: Mapped[str] = mapped_column(String(200), nullable=False)
    api_key: Mapped[str | None] = mapped_column(String(500), nullable=True)  # sent, never shown again
    base_model_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("base_models.id", ondelete="CASCADE"), nullable=True
    )
    timeout_s: Mapped[int] = mapped_column(nullable=False, default=60)


class Judgement(IdMixin, TimestampMixin, Base):
    """One judge's verdicts on an evaluation's samples (pairwise base vs tuned, and the rubric)."""

    __tablename__ = "judgements"

    owner_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    evaluation_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("evaluations.id", ondelete="CASCADE"), index=True)
    judge_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("judges.id", ondelete="SET NULL"), nullable=True)
    judge_name: Mapped[str] = mapped_column(String(100), nullable=False)  # kept when the judge is removed
    run_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("runs.id", ondelete="SET NULL"), nullable=True)
    storage_key: Mapped[str] = mapped_column(String(200), nullable=False)  # verdicts.jsonl lives here
    summary: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)


class SampleLabel(IdMixin, TimestampMixin, Base):
    """A person's own pick of the better answer for one evaluation sample, to measure a judge against."""

    __tablename__ = "sample_labels"
    __table_args__ = (UniqueConstraint("evaluation_id", "sample_id"),)

    owner_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    evaluation_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("evaluations.id", ondelete="CASCADE"), index=True)
    sample_id: Mapped[str] = mapped_column(String(100), nullable=False)
    choice: Mapped[str] = mapped_column(String(8), nullable=False)  # "base", "tuned" or "tie"
