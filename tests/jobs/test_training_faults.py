"""Jobs under faults (RELIABILITY.md), with real training children on the tiny model: a child killed mid-run
resumes from its last complete checkpoint as attempt 2 and succeeds; a kill in the middle of a checkpoint save
falls back to the checkpoint before; a job that dies every attempt ends failed with the cause; cancel stops the
child within a few steps and keeps a checkpoint. The kills come from failpoints (worker/training/failpoints.py):
a SIGKILL the child sends itself at an exact step, so each test is deterministic."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

from app.db.models import RunStatus
from tests.conftest import wait_for
from worker import lifecycle

# The run lifecycle's SQL (leases, attempts, fencing, requeues) runs on both databases in tests/runs and
# tests/reliability/test_service_restarts.py; these tests are about the training child, so SQLite alone.
pytestmark = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)

SPEC = {"batch_size": 4, "eval_steps": 0, "max_seq_length": 64, "save_total_limit": 10}


def _job(client: Any, setup: dict[str, Any], **spec: Any) -> dict[str, Any]:
    body = {"model_id": setup["model"], "dataset_version_id": setup["version"], "spec": {**SPEC, **spec}}
    response = client.post("/api/v1/jobs", json=body)
    assert response.status_code == 201, response.text
    return dict(response.json())


def _read(client: Any, job: dict[str, Any]) -> dict[str, Any]:
    return dict(client.get(f"/api/v1/jobs/{job['id']}").json())


def _checkpoints(client: Any, job: dict[str, Any]) -> list[str]:
    return [c["name"] for c in client.get(f"/api/v1/jobs/{job['id']}/checkpoints").json()]


def _failpoint(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, points: str, once: bool = True) -> None:
    monkeypatch.setenv("REFINERY_FAILPOINTS", points)
    if once:
        monkeypatch.setenv("REFINERY_FAILPOINTS_ONCE", str(tmp_path / "fired"))


def test_child_killed_at_step_five_resumes_as_attempt_two(
    client: Any, setup: dict[str, Any], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _failpoint(monkeypatch, tmp_path, "kill_at_step=5")
    job = _job(client, setup, max_steps=8, save_steps=2)
    lifecycle.execute(job["run"]["id"])
    first = _read(client, job)["run"]
    assert first["status"] == "queued" and first["attempt"] == 1  # re-queued without a human
    assert _checkpoints(client, job) == ["checkpoint-2", "checkpoint-4"]
    lifecycle.execute(job["run"]["id"])  # the next delivery (another worker, or the reconciler's resend)
    done = _read(client, job)["run"]
    assert done["status"] == "succeeded" and done["attempt"] == 2, done
    assert done["result"]["resumed_from"] == "checkpoint-4" and done["result"]["steps"] == 8
    steps = [m["step"] for m in client.get(f"/api/v1/jobs/{job['id']}/metrics").json() if m["loss"] is not None]
    assert steps == list(range(1, 9))  # the whole curve, no step lost or doubled
    events = [e["message"] for e in client.get(f"/api/v1/jobs/{job['id']}/events").json()]
    assert any("signal 9" in e for e in events) and any("checkpoint-4" in e for e in events)


def test_kill_during_checkpoint_save_resumes_from_the_one_before(
    client: Any, setup: dict[str, Any], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _failpoint(monkeypatch, tmp_path, "kill_in_save=4")
    job = _job(client, setup, max_steps=6, save_steps=2)
    lifecycle.execute(job["run"]["id"])
    assert _read(client, job)["run"]["status"] == "queued"
    assert _checkpoints(client, job) == ["checkpoint-2"]  # checkpoint-4 is on disk but never marked complete
    lifecycle.execute(job["run"]["id"])
    done = _read(client, job)["run"]
    assert done["status"] == "succeeded" and done["result"]["resumed_from"] == "checkpoint-2"
    assert done["result"]["steps"] == 6
    assert _checkpoints(client, job) == ["checkpoint-2", "checkpoint-4", "checkpoint-6"]


def test_a_job_that_dies_every_attempt_ends_failed(
    client: Any, setup: dict[str, Any], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _failpoint(monkeypatch, tmp_path, "kill_at_step=1", once=False)
    job = _job(client, setup, max_steps=4, save_steps=2)
    for _ in range(5):  # more deliveries than attempts: no endless crash loop
        lifecycle.execute(job["run"]["id"])
    run = _read(client, job)["run"]
    assert run["status"] == "failed" and run["attempt"] == run["max_attempts"] == 3
    assert "3 times" in run["error_message"]


def test_cancel_stops_within_a_few_steps_and_keeps_a_checkpoint(
    client: Any, setup: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    job = _job(client, setup, max_steps=100_000, save_steps=100_000)  # no checkpoint but the one cancel writes
    worker = threading.Thread(target=lifecycle.execute, args=(job["run"]["id"],))
    worker.start()
    try:

        def trained_steps() -> list[int]:
            rows = client.get(f"/api/v1/jobs/{job['id']}/metrics").json()
            return [m["step"] for m in rows if m["loss"] is not None]

        wait_for(lambda: len(trained_steps()) >= 3, timeout=120, what="three logged steps")
        cancelled_at = max(trained_steps())
        assert client.post(f"/api/v1/jobs/{job['id']}/cancel").status_code == 200
        started = time.monotonic()
        worker.join(timeout=60)
        assert not worker.is_alive()
    finally:
        worker.join(timeout=60)
    run = _read(client, job)["run"]
    assert run["status"] == "cancelled"
    assert time.monotonic() - started < 60
    kept = _checkpoints(client, job)
    assert len(kept) == 1  # the SIGTERM the worker sends first makes the child save before it stops
    stopped_at = int(kept[0].split("-")[1])
    assert stopped_at >= cancelled_at and stopped_at < 100_000
    lifecycle.execute(job["run"]["id"])  # a late delivery does not start it again
    assert _read(client, job)["run"]["status"] == RunStatus.cancelled.value


def test_a_full_disk_during_a_checkpoint_save_fails_with_the_cause_and_keeps_the_one_before(
    client: Any, setup: dict[str, Any], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The child's file-size limit drops to nothing at step 4 (RLIMIT_FSIZE, the `ulimit -f` of the fault
    table): the writes of step 4 fail as on a full disk. The job fails at once, not after three attempts,
    says the disk is full, and checkpoint-2 is whole and still resumable."""
    _failpoint(monkeypatch, tmp_path, "disk_full_at_step=4")
    job = _job(client, setup, max_steps=6, save_steps=2)
    lifecycle.execute(job["run"]["id"])
    run = _read(client, job)["run"]
    assert run["status"] == "failed" and run["error_kind"] == "disk_full" and run["attempt"] == 1, run
    assert "disk is full" in run["error_message"] and "checkpoint" in run["error_message"]
    assert _checkpoints(client, job) == ["checkpoint-2"]
    resumed = client.post(f"/api/v1/jobs/{job['id']}/resume", json={"checkpoint": "checkpoint-2"})
    assert resumed.status_code == 201, resumed.text
    lifecycle.execute(resumed.json()["run"]["id"])
    again = client.get(f"/api/v1/jobs/{resumed.json()['id']}").json()["run"]
    assert again["status"] == "succeeded" and again["result"]["resumed_from"] == "checkpoint-2"


def test_out_of_memory_fails_with_kind_oom_and_what_to_change(
    client: Any, setup: dict[str, Any], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _failpoint(monkeypatch, tmp_path, "oom_at_step=2", once=False)
    job = _job(client, setup, max_steps=4, save_steps=2)
    lifecycle.execute(job["run"]["id"])
    run = _read(client, job)["run"]
    assert run["status"] == "failed" and run["error_kind"] == "oom" and run["attempt"] == 1, run
    for advice in ("batch size", "max sequence length", "QLoRA"):
        assert advice in run["error_message"]


def test_sigterm_to_the_worker_saves_a_checkpoint_and_requeues_the_job(
    client: Any, setup: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worker's SIGTERM handler sets STOPPING; the supervisor passes SIGTERM to the training child, which
    saves a checkpoint and exits; the job goes back to the queue without using up an attempt, and the next
    delivery resumes from that checkpoint."""
    job = _job(client, setup, max_steps=100_000, save_steps=100_000)  # no checkpoint but the one SIGTERM writes
    stopping = threading.Event()
    monkeypatch.setattr(lifecycle, "STOPPING", stopping)
    worker = threading.Thread(target=lifecycle.execute, args=(job["run"]["id"],))
    worker.start()
    try:

        def trained_steps() -> list[int]:
            return [m["step"] for m in client.get(f"/api/v1/jobs/{job['id']}/metrics").json() if m["loss"] is not None]

        wait_for(lambda: len(trained_steps()) >= 3, timeout=120, what="three logged steps")
        stopping.set()
        worker.join(timeout=60)
        assert not worker.is_alive()
    finally:
        stopping.set()
        worker.join(timeout=60)
    run = _read(client, job)["run"]
    assert run["status"] == "queued" and run["attempt"] == 0, run
    [kept] = _checkpoints(client, job)
    assert int(kept.split("-")[1]) >= 3
    events = [e["message"] for e in client.get(f"/api/v1/jobs/{job['id']}/events").json()]
    assert any("worker was stopped" in e for e in events), events


def test_pause_saves_a_checkpoint_frees_the_worker_and_continue_resumes_from_it(
    client: Any, setup: dict[str, Any]
) -> None:
    job = _job(client, setup, max_steps=100_000, save_steps=100_000)  # no checkpoint but the one pause writes
    run_id = job["run"]["id"]

    def trained_steps() -> list[int]:
        rows = client.get(f"/api/v1/jobs/{job['id']}/metrics").json()
        return [m["step"] for m in rows if m["loss"] is not None]

    worker = threading.Thread(target=lifecycle.execute, args=(run_id,))
    worker.start()
    try:
        wait_for(lambda: len(trained_steps()) >= 3, timeout=120, what="three logged steps")
        paused_after = max(trained_steps())
        # the job page's button (a browser form with its CSRF token)
        page = client.post(f"/jobs/{job['id']}/pause", follow_redirects=False)
        assert page.status_code == 303
        worker.join(timeout=90)
        assert not worker.is_alive()  # the worker is free again
    finally:
        worker.join(timeout=60)
    run = _read(client, job)["run"]
    assert run["status"] == "paused" and run["attempt"] == 0, run  # a pause uses up no attempt
    kept = _checkpoints(client, job)
    assert len(kept) == 1 and int(kept[0].split("-")[1]) >= paused_after
    lifecycle.execute(run_id)  # a late delivery does not start a paused job
    assert _read(client, job)["run"]["status"] == "paused"
    shown = client.get(f"/jobs/{job['id']}").text
    assert f'action="/jobs/{job["id"]}/continue"' in shown and "hx-trigger" not in shown.split('id="job-live"')[1][:200]

    assert client.post(f"/api/v1/jobs/{job['id']}/continue").json()["status"] == "queued"
    worker = threading.Thread(target=lifecycle.execute, args=(run_id,))
    worker.start()
    try:
        checkpoint_step = int(kept[0].split("-")[1])
        wait_for(lambda: max(trained_steps()) >= checkpoint_step + 2, timeout=120, what="steps after the resume")
        assert client.post(f"/api/v1/jobs/{job['id']}/cancel").status_code == 200
        worker.join(timeout=90)
    finally:
        worker.join(timeout=60)
    events = [e["code"] for e in client.get(f"/api/v1/jobs/{job['id']}/events").json()]
    assert events.index("pause_requested") < events.index("paused") < events.index("resumed")
    resumed = [e for e in client.get(f"/api/v1/jobs/{job['id']}/events").json() if e["code"] == "resuming"]
    assert resumed and resumed[-1]["params"]["checkpoint"] == kept[0]  # training went on from the checkpoint
    assert _read(client, job)["run"]["status"] == "cancelled"
    assert client.post(f"/api/v1/jobs/{job['id']}/continue").status_code == 409  # only a paused job continues
