"""Celery client side: one configured app, tasks sent by name (the web never imports worker code)."""

from __future__ import annotations

import logging
from functools import lru_cache

from celery import Celery

from app.core.config import Settings, get_settings

log = logging.getLogger(__name__)

RUN_TASK = "refinery.execute_run"
QUEUES = ("cpu", "gpu")


def make_celery(settings: Settings) -> Celery:
    app = Celery("refinery", broker=settings.celery_broker_url)
    transport_options: dict[str, object] = {"max_retries": 1, "interval_start": 0, "interval_step": 0.2}
    if settings.is_embedded_broker:
        folder = settings.broker_folder
        transport_options |= {
            "data_folder_in": str(folder / "queue"),
            "data_folder_out": str(folder / "queue"),
            "processed_folder": str(folder / "processed"),
            "control_folder": str(folder / "control"),
            "store_processed": False,
        }
    else:
        transport_options |= {
            "socket_connect_timeout": 2,
            "socket_timeout": 5,
            "visibility_timeout": settings.broker_visibility_timeout_seconds,
        }
    app.conf.update(
        broker_transport_options=transport_options,
        broker_connection_retry_on_startup=True,
        broker_connection_timeout=3,
        task_ignore_result=True,
        task_serializer="json",
        accept_content=["json"],
        # The database is the record of job state: acknowledge early, one message at a time.
        task_acks_late=False,
        worker_prefetch_multiplier=1,
        worker_hijack_root_logger=False,
        worker_enable_remote_control=not settings.is_embedded_broker,
        worker_send_task_events=False,
        task_default_queue=settings.queue("cpu"),
    )
    return app


@lru_cache
def get_celery() -> Celery:
    return make_celery(get_settings())


def send_run(run_id: str, queue: str) -> bool:
    """Wake a worker for a run. Failure is logged, not raised: the reconciler re-sends queued runs."""
    settings = get_settings()
    try:
        get_celery().send_task(RUN_TASK, args=[run_id], queue=settings.queue(queue), retry=False)
    except Exception as exc:  # the broker is down or unreachable
        log.warning("could not enqueue run %s on %s: %s", run_id, queue, exc)
        return False
    return True


def broker_ready(timeout: float = 2.0) -> bool:
    settings = get_settings()
    if settings.is_embedded_broker:
        return (settings.broker_folder / "queue").is_dir()
    try:
        with get_celery().connection_for_write() as conn:
            # no pause before the one retry: /healthz answers within its second
            conn.ensure_connection(max_retries=1, timeout=timeout, interval_start=0, interval_step=0)
        return True
    except Exception:
        return False
