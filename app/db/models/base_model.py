"""Base models: Hugging Face-format directories in the artifact store (safetensors only)."""

from __future__ import annotations

import enum
import uuid

from sqlalchemy import BigInteger, Enum, ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from app.db.base import Base, IdMixin, TimestampMixin


class ModelStatus(enum.StrEnum):
    importing = "importing"
    ready = "ready"
    failed = "failed"


class BaseModelRecord(IdMixin, TimestampMixin, Base):
    __tablename__ = "base_models"

    # None = shared with every user (the bundled model); otherwise private to its owner.
    owner_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), nullable=True, index=True
    )
    name: Mapped[str] = mapped_column(String(200), nullable=False)
    source: Mapped[str] = mapped_column(String(20), nullable=False)  # bundled | local | hub
    source_ref: Mapped[str] = mapped_column(String(1000), nullable=False)
    revision: Mapped[str | None] = mapped_column(String(100), nullable=True)
    status: Mapped[ModelStatus] = mapped_column(
        Enum(ModelStatus, native_enum=False, length=16, validate_strings=True),
        default=ModelStatus.importing,
        nullable=False,
    )
    storage_key: Mapped[str | None] = mapped_column(String(100), nullable=True)
    architecture: Mapped[str | None] = mapped_column(String(100), nullable=True)
    num_parameters: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    context_length: Mapped[int | None] = mapped_column(Integer, nullable=True)
    license: Mapped[str | None] = mapped_column(String(100), nullable=True)
    chat_template: Mapped[str | None] = mapped_column(Text, nullable=True)
    size_bytes: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    import_run_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("runs.id", ondelete="SET NULL"), nullable=True)
    error_message: Mapped[str | None] = mapped_column(Text, nullable=True)
