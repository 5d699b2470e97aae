"""Cleaning: saved recipes, a recipe's run over a dataset version (its decisions are files in the artifact
store), the user's overrides of those decisions, and the version committed from them."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

from sqlalchemy import JSON, ForeignKey, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.db.base import Base, IdMixin, TimestampMixin

if TYPE_CHECKING:
    from app.db.models.dataset import DatasetVersion
    from app.db.models.run import Run


class CleaningRecipe(IdMixin, TimestampMixin, Base):
    __tablename__ = "cleaning_recipes"
    __table_args__ = (UniqueConstraint("owner_id", "name"),)

    owner_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(100), nullable=False)
    steps: Mapped[list[dict[str, Any]]] = mapped_column(JSON, nullable=False)


class Cleaning(IdMixin, TimestampMixin, Base):
    """One run of a recipe over a version: decisions.parquet and modified.parquet under storage_key."""

    __tablename__ = "cleanings"

    owner_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    version_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("dataset_versions.id", ondelete="CASCADE"), index=True)
    recipe_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("cleaning_recipes.id", ondelete="SET NULL"), nullable=True
    )
    recipe_name: Mapped[str] = mapped_column(String(100), nullable=False)
    steps: Mapped[list[dict[str, Any]]] = mapped_column(JSON, nullable=False)  # the recipe as it ran
    run_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("runs.id", ondelete="SET NULL"), nullable=True)
    storage_key: Mapped[str] = mapped_column(String(200), nullable=False)
    summary: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    committed_version_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("dataset_versions.id", ondelete="SET NULL"), nullable=True
    )
    # the background run writing the committed version (the latest try)
    commit_run_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("runs.id", ondelete="SET NULL"), nullable=True)

    version: Mapped[DatasetVersion] = relationship(foreign_keys=[version_id], lazy="raise")
    run: Mapped[Run | None] = relationship(foreign_keys=[run_id], lazy="raise")


class CleaningOverride(IdMixin, TimestampMixin, Base):
    """A user's verdict on one record, replacing the recipe's: keep (restore), drop, or keep the original
    text (undo every change the recipe made to it)."""

    __tablename__ = "cleaning_overrides"
    __table_args__ = (UniqueConstraint("cleaning_id", "record_id"),)

    cleaning_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("cleanings.id", ondelete="CASCADE"), index=True)
    record_id: Mapped[str] = mapped_column(String(64), nullable=False)
    action: Mapped[str] = mapped_column(String(16), nullable=False)  # keep | drop | original
    user_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), nullable=True)
