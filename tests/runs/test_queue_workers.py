"""Real Celery workers consume runs through the embedded filesystem transport and through Redis."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from app.basemodels import service as models
from app.cli import worker_argv
from app.db.models import BaseModelRecord, ModelStatus, Role, RunEvent
from app.db.session import session_scope
from app.users import service as users
from tests.conftest import REDIS_URL, ROOT, need_service, stop_process, wait_for


@pytest.fixture(params=["embedded", "redis"])
def broker(request: pytest.FixtureRequest, configure: Any, env: Any) -> Any:
    if request.param == "redis":
        need_service("Redis", "127.0.0.1", 6379)
        return configure(broker_url=f"{REDIS_URL}/7")
    return env


def _start_worker(settings: Any, log: Path, **extra: str) -> subprocess.Popen[bytes]:
    child_env = {k: v for k, v in os.environ.items() if not k.startswith("REFINERY_")}
    child_env.update(
        {
            "REFINERY_DATA_DIR": str(settings.data_dir),
            "REFINERY_DATABASE_URL": settings.sqlalchemy_url,
            "REFINERY_BROKER_URL": settings.broker_url,
            "REFINERY_QUEUE_PREFIX": settings.queue_prefix,
            "REFINERY_RECONCILE_SECONDS": "1",
            "REFINERY_LEASE_TTL_SECONDS": "5",
            "REFINERY_HEARTBEAT_SECONDS": "0.5",
        }
    )
    child_env.update({f"REFINERY_{name.upper()}": value for name, value in extra.items()})
    handle = log.open("wb")
    return subprocess.Popen(
        worker_argv(["cpu", "gpu"], 2),
        cwd=ROOT,
        env=child_env,
        stdout=handle,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def _ready(model_id: Any) -> bool:
    with session_scope() as session:
        record = session.get(BaseModelRecord, model_id)
        return record is not None and record.status == ModelStatus.ready


def test_worker_imports_a_model_sent_through_the_broker(broker: Any, tmp_path: Path, tiny_model_dir: Path) -> None:
    with session_scope() as session:
        admin = users.create_user(session, email="a@example.com", password="admin-password", role=Role.admin)
        model_id = models.register_local(session, user=admin, name="tiny", path=str(tiny_model_dir)).id
    proc = _start_worker(broker, tmp_path / "worker.log")
    try:
        wait_for(lambda: _ready(model_id), timeout=120, interval=0.5, what=f"import via {broker.celery_broker_url}")
    finally:
        stop_process(proc)
        print((tmp_path / "worker.log").read_text()[-3000:])
    with session_scope() as session:
        record = session.get(BaseModelRecord, model_id)
        assert record is not None and record.import_run_id is not None
        started = [
            e
            for e in session.query(RunEvent).filter(RunEvent.run_id == record.import_run_id)
            if e.message.startswith("Started attempt")
        ]
        assert len(started) == 1  # exactly one execution even though the start-up sweep re-sent it


def test_worker_restart_picks_up_runs_queued_while_it_was_down(
    broker: Any, tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Messages can be lost (a broker restart); the worker's start-up sweep re-sends queued runs."""
    with session_scope() as session:
        admin = users.create_user(session, email="a@example.com", password="admin-password", role=Role.admin)
    with monkeypatch.context() as patch:
        patch.setattr("app.runs.service.send_run", lambda run_id, queue: False)  # the message is lost
        with session_scope() as session:
            model_id = models.register_local(session, user=admin, name="tiny", path=str(tiny_model_dir)).id
    proc = _start_worker(broker, tmp_path / "worker.log")
    try:
        wait_for(lambda: _ready(model_id), timeout=120, interval=0.5, what="the re-sent run")
    finally:
        stop_process(proc)


def test_worker_refuses_to_start_on_an_unmigrated_database(tmp_path: Path) -> None:
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("REFINERY_")}
    env.update({"REFINERY_DATA_DIR": str(tmp_path / "empty"), "REFINERY_QUEUE_PREFIX": "unmigrated"})
    result = subprocess.run(
        [sys.executable, "-m", "app.cli", "worker"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode != 0
    assert "refinery migrate" in result.stdout + result.stderr
