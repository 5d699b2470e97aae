"""The Celery worker application: same configuration as the web's client, plus the tasks."""

from __future__ import annotations

from typing import Any

from celery import signals

from app.core.config import get_settings
from app.core.queue import make_celery
from worker import lifecycle

celery = make_celery(get_settings())
celery.conf.imports = ("worker.tasks",)


@signals.worker_ready.connect
def _start_reconciler(**_: Any) -> None:
    lifecycle.start_reconciler()


@signals.worker_shutting_down.connect
def _stopping(**_: Any) -> None:
    lifecycle.STOPPING.set()
