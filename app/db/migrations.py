"""Run migrations and verify, at start-up, that the database schema is at head."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine

from app.core.errors import ConfigurationError

_ROOT = Path(__file__).resolve().parents[2]


def alembic_config(url: str | None = None) -> Config:
    cfg = Config(str(_ROOT / "alembic.ini"))
    cfg.set_main_option("script_location", str(_ROOT / "migrations"))
    if url:
        cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade_to_head(url: str | None = None) -> None:
    command.upgrade(alembic_config(url), "head")


def head_revisions() -> tuple[str, ...]:
    return tuple(ScriptDirectory.from_config(alembic_config()).get_heads())


def current_revisions(engine: Engine) -> tuple[str, ...]:
    with engine.connect() as conn:
        return tuple(MigrationContext.configure(conn).get_current_heads())


def verify_schema_at_head(engine: Engine) -> None:
    """Refuse to start on an out-of-date schema, and say what to run."""
    current, heads = set(current_revisions(engine)), set(head_revisions())
    if current != heads:
        raise ConfigurationError(
            f"The database schema is at {sorted(current) or 'nothing'} but the code expects {sorted(heads)}. "
            "Run `refinery migrate` (or `alembic upgrade head`) and start again."
        )
