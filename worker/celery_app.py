"""The Celery worker application: same configuration as the web's client, plus the tasks."""

from __future__ import annotations

from typing import Any

from celery import signals

from app.core.config import get_settings
from app.core.queue import make_celery
from worker import lifecycle


def _check_schema() -> None:
    """Refuse to start on an out-of-date database, saying what to run (as the web app does). Done when
    the app module loads: Celery logs and ignores exceptions raised in its start-up signal handlers."""
    from app.core.errors import ConfigurationError
    from app.db.migrations import verify_schema_at_head
    from app.db.session import get_engine

    get_settings().ensure_dirs()
    try:
        verify_schema_at_head(get_engine())
    except ConfigurationError as exc:
        raise SystemExit(f"Refinery worker: {exc}") from exc


_check_schema()
celery = make_celery(get_settings())
celery.conf.imports = ("worker.tasks",)


@signals.worker_ready.connect
def _start_reconciler(**_: Any) -> None:
    lifecycle.start_reconciler()
    if get_settings().spare_training_child:
        lifecycle.SPARES.enable()
    if get_settings().fork_children:
        lifecycle.FORKS.enable()


@signals.worker_shutting_down.connect
def _stopping(**_: Any) -> None:
    lifecycle.STOPPING.set()
    lifecycle.SPARES.close()
    lifecycle.FORKS.close()
