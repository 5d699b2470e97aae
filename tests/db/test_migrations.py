"""The migrations are the schema: they build an empty SQLite and PostgreSQL database to match the models."""

from __future__ import annotations

from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from app.core.errors import ConfigurationError
from app.db.base import Base
from app.db.migrations import alembic_config, head_revisions, verify_schema_at_head
from app.db.session import get_engine

pytestmark = pytest.mark.postgres_too  # SQL dialects, locking and the schema: both databases


def test_one_head() -> None:
    assert len(head_revisions()) == 1


def test_upgrade_builds_every_table_and_autogenerate_finds_no_difference(env: Any) -> None:
    engine = get_engine()
    assert set(Base.metadata.tables) <= set(inspect(engine).get_table_names())
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata)
    assert diff == []
    verify_schema_at_head(engine)  # does not raise


def test_downgrade_then_upgrade_round_trips(env: Any) -> None:
    from alembic import command

    command.downgrade(alembic_config(), "base")
    with pytest.raises(ConfigurationError, match="refinery migrate"):
        verify_schema_at_head(get_engine())
    command.upgrade(alembic_config(), "head")
    verify_schema_at_head(get_engine())
