"""Playground feedback: a thumbs up or down on an answer, or the better of two side-by-side answers."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import JSON, ForeignKey, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from app.db.base import Base, IdMixin, TimestampMixin


class Feedback(IdMixin, TimestampMixin, Base):
    __tablename__ = "feedback"

    owner_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    prompt: Mapped[list[dict[str, Any]]] = mapped_column(JSON, nullable=False)  # the messages before the answer
    model_a: Mapped[str] = mapped_column(String(200), nullable=False)
    answer_a: Mapped[str] = mapped_column(Text, nullable=False)
    model_b: Mapped[str | None] = mapped_column(String(200), nullable=True)
    answer_b: Mapped[str | None] = mapped_column(Text, nullable=True)
    # "up" / "down" rate answer A alone; "a" / "b" pick the better of the two
    choice: Mapped[str] = mapped_column(String(8), nullable=False)
    # the preference dataset these choices went into (they are used once)
    dataset_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("datasets.id", ondelete="SET NULL"), nullable=True)
