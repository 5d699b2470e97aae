"""Datasets: an upload, its validation, and immutable Parquet versions with splits and lineage."""

from __future__ import annotations

import enum
import uuid
from typing import TYPE_CHECKING, Any

from sqlalchemy import JSON, BigInteger, Enum, ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.db.base import Base, IdMixin, TimestampMixin

if TYPE_CHECKING:
    from app.db.models.run import Run


class Upload(IdMixin, TimestampMixin, Base):
    """A file as received. Stored under a server-chosen name; the user's file name is display text only."""

    __tablename__ = "uploads"

    owner_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    filename: Mapped[str] = mapped_column(String(255), nullable=False)
    size_bytes: Mapped[int] = mapped_column(BigInteger, nullable=False)
    sha256: Mapped[str] = mapped_column(String(64), nullable=False)
    storage_key: Mapped[str] = mapped_column(String(200), nullable=False)


class DatasetStatus(enum.StrEnum):
    validating = "validating"
    needs_review = "needs_review"  # some records are invalid: fix and re-upload, or import the valid ones
    ready = "ready"
    failed = "failed"


class Dataset(IdMixin, TimestampMixin, Base):
    __tablename__ = "datasets"

    owner_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(200), nullable=False)
    status: Mapped[DatasetStatus] = mapped_column(
        Enum(DatasetStatus, native_enum=False, length=16, validate_strings=True),
        default=DatasetStatus.validating,
        nullable=False,
    )
    upload_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("uploads.id", ondelete="RESTRICT"))
    # optional separate files for the validation and/or test split: {"validation": upload id, "test": ...}
    split_upload_ids: Mapped[dict[str, str] | None] = mapped_column(JSON, nullable=True)
    # how the upload is read: detected, or chosen by the user
    file_type: Mapped[str | None] = mapped_column(String(20), nullable=True)
    record_format: Mapped[str | None] = mapped_column(String(40), nullable=True)
    format_override: Mapped[str | None] = mapped_column(String(40), nullable=True)
    column_mapping: Mapped[dict[str, str] | None] = mapped_column(JSON, nullable=True)
    # how a plain-text file becomes records: "lines", "paragraphs" or "document"; None: detected
    text_split: Mapped[str | None] = mapped_column(String(20), nullable=True)
    model_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("base_models.id", ondelete="SET NULL"), nullable=True)
    split_ratios: Mapped[dict[str, float]] = mapped_column(JSON, nullable=False)
    split_seed: Mapped[int] = mapped_column(Integer, default=42, nullable=False)
    validation_run_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("runs.id", ondelete="SET NULL"), nullable=True
    )
    report: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    error_message: Mapped[str | None] = mapped_column(Text, nullable=True)

    validation_run: Mapped[Run | None] = relationship(foreign_keys=[validation_run_id], lazy="raise")
    upload: Mapped[Upload] = relationship(foreign_keys=[upload_id], lazy="raise")


class DatasetVersion(IdMixin, TimestampMixin, Base):
    """Immutable: a Parquet file of canonical records (with their split) and what made it."""

    __tablename__ = "dataset_versions"

    dataset_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("datasets.id", ondelete="CASCADE"), index=True)
    number: Mapped[int] = mapped_column(Integer, nullable=False)
    storage_key: Mapped[str] = mapped_column(String(200), nullable=False)
    record_count: Mapped[int] = mapped_column(Integer, nullable=False)
    skipped_count: Mapped[int] = mapped_column(Integer, default=0, nullable=False)
    split_counts: Mapped[dict[str, int]] = mapped_column(JSON, nullable=False)
    kind_counts: Mapped[dict[str, int]] = mapped_column(JSON, nullable=False)
    stats: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)
    source: Mapped[str] = mapped_column(String(20), nullable=False)  # import | cleaning
    parent_version_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("dataset_versions.id", ondelete="SET NULL"), nullable=True
    )
    upload_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("uploads.id", ondelete="SET NULL"), nullable=True)
    run_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("runs.id", ondelete="SET NULL"), nullable=True)
    options: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)

    dataset: Mapped[Dataset] = relationship(lazy="raise")
