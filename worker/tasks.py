"""Thin Celery tasks: ids in; the lifecycle re-loads, checks the state and acts."""

from __future__ import annotations

from app.core.queue import RUN_TASK
from worker import lifecycle
from worker.celery_app import celery


@celery.task(name=RUN_TASK, ignore_result=True)
def execute_run(run_id: str) -> None:
    lifecycle.execute(run_id)
