"""Deployments: a stable model name served at /v1/chat/completions, pointing at one adapter or base model, moved
only through an evaluation gate (or an administrator's recorded override); its history; promotions in flight."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from app.db.base import Base, IdMixin, TimestampMixin, UTCDateTime


class Deployment(IdMixin, TimestampMixin, Base):
    __tablename__ = "deployments"
    __table_args__ = (UniqueConstraint("owner_id", "name", name="uq_deployments_owner_name"),)

    owner_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(60), nullable=False)
    target: Mapped[str] = mapped_column(String(100), nullable=False)  # base-<uuid> or job-<uuid>
    # dataset_version_id, metric, margin, probe_margin, sample_size, grader_ids
    gate: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)


class DeploymentEvent(IdMixin, TimestampMixin, Base):
    """One line of a deployment's history: created, promoted, refused, overridden, rolled back."""

    __tablename__ = "deployment_events"

    deployment_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("deployments.id", ondelete="CASCADE"), index=True)
    actor_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), nullable=True)
    action: Mapped[str] = mapped_column(String(20), nullable=False)
    target: Mapped[str] = mapped_column(String(100), nullable=False)  # what the deployment points at after it
    previous: Mapped[str | None] = mapped_column(String(100), nullable=True)
    numbers: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)  # the gate's, when it ran
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)


class Promotion(IdMixin, TimestampMixin, Base):
    """A candidate waiting for its gate: the evaluations it needs, then passed (switched) or failed."""

    __tablename__ = "promotions"

    deployment_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("deployments.id", ondelete="CASCADE"), index=True)
    actor_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), nullable=True)
    candidate: Mapped[str] = mapped_column(String(100), nullable=False)  # job-<uuid>
    baseline: Mapped[str] = mapped_column(String(100), nullable=False)  # the target when the gate started
    candidate_evaluation_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("evaluations.id", ondelete="SET NULL"), nullable=True
    )
    baseline_evaluation_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("evaluations.id", ondelete="SET NULL"), nullable=True
    )
    status: Mapped[str] = mapped_column(String(12), nullable=False, default="running")  # running passed failed error
    numbers: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
