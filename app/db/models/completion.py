"""Stored chat completions (OpenAI's ``store: true``): the request and the answer, owned by the caller."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from app.db.base import Base, IdMixin, TimestampMixin


class StoredCompletion(IdMixin, TimestampMixin, Base):
    __tablename__ = "stored_completions"
    __table_args__ = (Index("ix_stored_completions_owner_created", "owner_id", "created_at"),)

    owner_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), nullable=False)
    completion_id: Mapped[str] = mapped_column(String(40), nullable=False, unique=True)  # chatcmpl-…
    model: Mapped[str] = mapped_column(String(300), nullable=False, index=True)
    messages: Mapped[list[dict[str, Any]]] = mapped_column(JSON, nullable=False)  # the request's messages
    answer: Mapped[str] = mapped_column(Text, nullable=False)
    finish_reason: Mapped[str] = mapped_column(String(20), nullable=False)
    usage: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    request: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)  # temperature, top_p, max_tokens, seed
    completion_metadata: Mapped[dict[str, str] | None] = mapped_column("metadata", JSON, nullable=True)
    # review on the Traffic page: "good" or "bad", and the answer as it should have been
    rating: Mapped[str | None] = mapped_column(String(8), nullable=True)
    correction: Mapped[str | None] = mapped_column(Text, nullable=True)
    # the dataset made from it (Make dataset), for lineage back to the traffic
    dataset_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("datasets.id", ondelete="SET NULL"), nullable=True)
