"""Durable runs: leases, duplicate deliveries, lost workers, killed children, crash loops, cancel.

The worker's lifecycle is exercised for real (child processes, heartbeats, the reconciler's SQL) on
SQLite and PostgreSQL; the job itself is a small script whose behaviour each test chooses.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update

from app.db.base import utcnow
from app.db.models import Run, RunStatus
from app.db.session import session_scope
from app.runs import service as runs
from tests.conftest import wait_for
from worker import lifecycle
from worker.jobs import HANDLERS

pytestmark = pytest.mark.postgres_too  # SQL dialects, locking and the schema: both databases

CHILD = """
import json, os, sys, time
spec = json.loads(sys.argv[1])
open(spec["pidfile"], "w").write(str(os.getpid()))
with open(spec["attempts"], "a") as f: f.write("x")
for step in range(spec["steps"]):
    print(json.dumps({"progress": (step + 1) / spec["steps"], "message": f"step {step + 1}"}), flush=True)
    time.sleep(spec["sleep"])
if spec.get("crash"):
    os.kill(os.getpid(), 9)
if spec.get("error"):
    print(json.dumps({"error": {"kind": "data", "message": "line 3: no assistant turn"}}), flush=True)
    sys.exit(1)
print(json.dumps({"result": {"ok": True}}), flush=True)
"""


class ScriptHandler:
    def argv(self, run_id: uuid.UUID, params: dict[str, Any], attempt: int) -> list[str]:
        return [sys.executable, "-c", CHILD, json.dumps(params)]

    def on_success(self, session: Any, run_id: uuid.UUID, result: dict[str, Any]) -> None:
        run = session.get(Run, run_id)
        run.params = {**run.params, "applied": True}


@pytest.fixture
def script_kind(env: Any, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setitem(HANDLERS, "test_script", ScriptHandler())
    monkeypatch.setattr(lifecycle, "KILL_GRACE_SECONDS", 1.0)
    return "test_script"


def _create(tmp_path: Path, **params: Any) -> uuid.UUID:
    spec = {
        "pidfile": str(tmp_path / "pid"),
        "attempts": str(tmp_path / "attempts"),
        "steps": 3,
        "sleep": 0.05,
    }
    spec.update(params)
    with session_scope() as session:
        return runs.create_run(session, kind="test_script", owner=None, params=spec).id


def _get(run_id: uuid.UUID) -> Run:
    with session_scope() as session:
        run = session.get(Run, run_id)
        assert run is not None
        session.expunge(run)
        return run


def _events(run_id: uuid.UUID) -> list[str]:
    with session_scope() as session:
        return [e.message for e in runs.list_events(session, run_id)]


def _start_in_thread(run_id: uuid.UUID, tmp_path: Path) -> tuple[threading.Thread, int]:
    """Execute the run as a worker thread would; returns the thread and the child's pid once it started."""
    worker = threading.Thread(target=lifecycle.execute, args=(str(run_id),))
    worker.start()
    pid = wait_for(lambda: (tmp_path / "pid").exists() and (tmp_path / "pid").read_text(), timeout=30, what="child pid")
    return worker, int(pid)


def test_run_succeeds_and_a_second_delivery_is_a_no_op(script_kind: str, tmp_path: Path) -> None:
    run_id = _create(tmp_path)
    lifecycle.execute(str(run_id))
    run = _get(run_id)
    assert run.status == RunStatus.succeeded and run.attempt == 1 and run.progress == 1.0
    assert run.result == {"ok": True} and run.params["applied"] is True
    before = _events(run_id)
    lifecycle.execute(str(run_id))  # the broker delivered the same message again
    assert _get(run_id).attempt == 1 and _events(run_id) == before
    assert (tmp_path / "attempts").read_text() == "x"  # the job ran exactly once


def test_stale_heartbeat_is_requeued_by_the_reconciler_and_completes_once(script_kind: str, tmp_path: Path) -> None:
    run_id = _create(tmp_path)
    with session_scope() as session:  # a worker claims the run, then dies without a word
        assert runs.claim(session, run_id, "dead-worker:1:1") is not None
    lifecycle.execute(str(run_id))  # a redelivery while the lease is held does nothing
    assert _get(run_id).status == RunStatus.running and not (tmp_path / "attempts").exists()
    with session_scope() as session:
        assert runs.reconcile(session)["requeued"] == 0  # heartbeat still fresh
        session.execute(update(Run).where(Run.id == run_id).values(heartbeat_at=utcnow() - timedelta(hours=1)))
    with session_scope() as session:
        assert runs.reconcile(session)["requeued"] == 1
    run = _get(run_id)
    assert run.status == RunStatus.queued and run.lease_owner is None
    assert any("stopped sending heartbeats" in m for m in _events(run_id))
    lifecycle.execute(str(run_id))
    lifecycle.execute(str(run_id))
    run = _get(run_id)
    assert run.status == RunStatus.succeeded and run.attempt == 2
    assert (tmp_path / "attempts").read_text() == "x"


def test_killed_child_is_retried_as_attempt_two(script_kind: str, tmp_path: Path) -> None:
    run_id = _create(tmp_path, steps=200, sleep=0.05)
    worker, pid = _start_in_thread(run_id, tmp_path)
    os.kill(pid, signal.SIGKILL)
    worker.join(timeout=30)
    assert not worker.is_alive()
    run = _get(run_id)
    assert run.status == RunStatus.queued and run.attempt == 1
    assert any("killed by signal 9" in m for m in _events(run_id))
    with session_scope() as session:
        session.execute(update(Run).where(Run.id == run_id).values(params={**run.params, "steps": 2}))
    lifecycle.execute(str(run_id))
    assert _get(run_id).status == RunStatus.succeeded and _get(run_id).attempt == 2


def test_a_job_that_crashes_every_attempt_ends_failed(script_kind: str, tmp_path: Path) -> None:
    run_id = _create(tmp_path, crash=True, steps=1)
    for _ in range(5):  # more deliveries than attempts: no endless loop
        lifecycle.execute(str(run_id))
    run = _get(run_id)
    assert run.status == RunStatus.failed and run.attempt == run.max_attempts == 3
    assert "failed 3 times" in (run.error_message or "")
    assert (tmp_path / "attempts").read_text() == "xxx"


def test_classified_error_fails_at_once_with_its_sentence(script_kind: str, tmp_path: Path) -> None:
    run_id = _create(tmp_path, error=True, steps=1)
    lifecycle.execute(str(run_id))
    run = _get(run_id)
    assert run.status == RunStatus.failed and run.attempt == 1
    assert run.error_kind == "data" and run.error_message == "line 3: no assistant turn"


def test_cancel_stops_the_child_and_is_never_requeued(
    script_kind: str, tmp_path: Path, configure: Any, env: Any
) -> None:
    configure(heartbeat_seconds=0.2)
    run_id = _create(tmp_path, steps=400, sleep=0.05)
    worker, pid = _start_in_thread(run_id, tmp_path)
    wait_for(lambda: _get(run_id).progress > 0, timeout=30, what="progress")
    with session_scope() as session:
        runs.request_cancel(session, session.get(Run, run_id))
    worker.join(timeout=30)
    assert not worker.is_alive()
    run = _get(run_id)
    assert run.status == RunStatus.cancelled
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # the child process is gone
    with session_scope() as session:
        assert runs.reconcile(session, resend_all=True)["resent"] == 0
    lifecycle.execute(str(run_id))
    assert _get(run_id).status == RunStatus.cancelled


def test_cancel_before_start_and_progress_eta(script_kind: str, tmp_path: Path) -> None:
    run_id = _create(tmp_path)
    with session_scope() as session:
        runs.request_cancel(session, session.get(Run, run_id))
    lifecycle.execute(str(run_id))
    assert _get(run_id).status == RunStatus.cancelled and not (tmp_path / "attempts").exists()


def test_graceful_worker_stop_requeues_without_using_an_attempt(
    script_kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_id = _create(tmp_path, steps=400, sleep=0.05)
    stopping = threading.Event()
    monkeypatch.setattr(lifecycle, "STOPPING", stopping)
    worker = threading.Thread(target=lifecycle.execute, args=(str(run_id),))
    worker.start()
    wait_for(lambda: (tmp_path / "pid").exists(), timeout=30, what="child start")
    stopping.set()
    worker.join(timeout=30)
    run = _get(run_id)
    assert run.status == RunStatus.queued and run.attempt == 0
    assert any("worker was stopped" in m for m in _events(run_id))


def test_a_heartbeat_too_close_to_the_lease_is_refused(tmp_path: Path) -> None:
    from pydantic import ValidationError

    from app.core.config import Settings

    with pytest.raises(ValidationError, match="at most a third of REFINERY_LEASE_TTL_SECONDS"):
        Settings(data_dir=tmp_path, heartbeat_seconds=5, lease_ttl_seconds=5)
    assert Settings(data_dir=tmp_path, heartbeat_seconds=5, lease_ttl_seconds=15).lease_ttl_seconds == 15
