"""OpenAI's evals: a definition (what an item looks like, the graders that test it) and its runs, each a
background run that grades a data source's items and keeps every item's grades in the artifact store."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

from sqlalchemy import JSON, ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.db.base import Base, IdMixin, TimestampMixin

if TYPE_CHECKING:
    from app.db.models.run import Run


class EvalDefinition(IdMixin, TimestampMixin, Base):
    __tablename__ = "evals"

    owner_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(200), nullable=False)
    # OpenAI's data_source_config as answered (type custom, the JSON schema of an item and a sample)
    data_source_config: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)
    # the graders, as validated (app/graders/specs.py), each with its pass_threshold
    testing_criteria: Mapped[list[dict[str, Any]]] = mapped_column(JSON, nullable=False)
    metadata_: Mapped[dict[str, str] | None] = mapped_column("metadata", JSON, nullable=True)


class EvalRun(IdMixin, TimestampMixin, Base):
    __tablename__ = "eval_runs"

    eval_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("evals.id", ondelete="CASCADE"), index=True)
    owner_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(200), nullable=False)
    data_source: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)
    model: Mapped[str] = mapped_column(String(200), nullable=False, default="")
    run_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("runs.id", ondelete="SET NULL"), nullable=True)
    # items.jsonl (what is graded) and output_items.jsonl (each item's grades) live under this key
    storage_key: Mapped[str] = mapped_column(String(200), nullable=False, default="")
    # result_counts and per_testing_criteria_results, copied here when the run succeeds
    summary: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    metadata_: Mapped[dict[str, str] | None] = mapped_column("metadata", JSON, nullable=True)

    run: Mapped[Run | None] = relationship(lazy="raise")


class SavedGrader(IdMixin, TimestampMixin, Base):
    """A grader a user defined on the Evaluations page, by name: attached to a job's evaluation, or the reward
    of a reinforcement job (its spec is copied there, so changing or deleting it later changes neither)."""

    __tablename__ = "graders"

    owner_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(100), nullable=False)
    # OpenAI's grader object, as validated (app/graders/specs.py)
    spec: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)
