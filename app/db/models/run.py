"""Background runs: the durable record of every job a worker does.

The database is the truth about a run; a broker message only wakes a worker. A worker claims a run
by taking a lease (owner, attempt, heartbeat); the reconciler re-queues runs whose heartbeat went stale.
"""

from __future__ import annotations

import enum
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Enum, Float, ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship
from sqlalchemy.sql.expression import false as sa_false

from app.db.base import Base, IdMixin, TimestampMixin, UTCDateTime


class RunStatus(enum.StrEnum):
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"
    paused = "paused"  # stopped at a checkpoint on request; no worker holds it until it is resumed

    @property
    def is_final(self) -> bool:
        return self in (RunStatus.succeeded, RunStatus.failed, RunStatus.cancelled)


class ErrorKind(enum.StrEnum):
    data = "data"
    oom = "oom"
    disk_full = "disk_full"
    model_load = "model_load"
    training = "training"
    internal = "internal"
    lost = "lost"


class Run(IdMixin, TimestampMixin, Base):
    __tablename__ = "runs"

    kind: Mapped[str] = mapped_column(String(40), nullable=False, index=True)
    queue: Mapped[str] = mapped_column(String(20), nullable=False, default="cpu")
    owner_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), nullable=True, index=True
    )
    status: Mapped[RunStatus] = mapped_column(
        Enum(RunStatus, native_enum=False, length=16, validate_strings=True),
        default=RunStatus.queued,
        nullable=False,
        index=True,
    )
    params: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict, nullable=False)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    progress: Mapped[float] = mapped_column(Float, default=0.0, nullable=False)
    progress_message: Mapped[str | None] = mapped_column(String(500), nullable=True)
    # the same texts as codes + parameters (app/runs/messages.py), shown in the reader's language
    progress_code: Mapped[str | None] = mapped_column(String(40), nullable=True)
    progress_params: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    eta_seconds: Mapped[float | None] = mapped_column(Float, nullable=True)
    attempt: Mapped[int] = mapped_column(Integer, default=0, nullable=False)
    max_attempts: Mapped[int] = mapped_column(Integer, default=3, nullable=False)
    lease_owner: Mapped[str | None] = mapped_column(String(200), nullable=True)
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    enqueued_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    cancel_requested: Mapped[bool] = mapped_column(default=False, nullable=False)
    # the worker stops the child at its next checkpoint and leaves the run paused
    pause_requested: Mapped[bool] = mapped_column(default=False, server_default=sa_false(), nullable=False)
    error_kind: Mapped[str | None] = mapped_column(String(20), nullable=True)
    error_message: Mapped[str | None] = mapped_column(Text, nullable=True)
    error_code: Mapped[str | None] = mapped_column(String(40), nullable=True)
    error_params: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)

    events: Mapped[list[RunEvent]] = relationship(
        back_populates="run", lazy="raise", order_by="RunEvent.seq", cascade="all, delete-orphan"
    )


class RunEvent(IdMixin, TimestampMixin, Base):
    __tablename__ = "run_events"

    run_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    seq: Mapped[int] = mapped_column(Integer, nullable=False)
    level: Mapped[str] = mapped_column(String(10), default="info", nullable=False)
    message: Mapped[str] = mapped_column(Text, nullable=False)  # English, for logs and API clients
    code: Mapped[str | None] = mapped_column(String(40), nullable=True)
    params: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    attempt: Mapped[int] = mapped_column(Integer, default=0, nullable=False)

    run: Mapped[Run] = relationship(back_populates="events", lazy="raise")
