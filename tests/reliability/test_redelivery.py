"""A job longer than the broker's visibility timeout runs exactly once. Redis (the machine's own) with a
3 s visibility timeout, a training job of more than ten seconds, the reconciler re-sending queued runs
every second, and the same run's message sent twice more while it trains: every extra delivery finds the
lease held and does nothing."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from app.core.queue import send_run
from tests.conftest import REDIS_URL, need_service, stop_process, wait_for
from tests.runs.test_queue_workers import _start_worker

pytestmark = pytest.mark.serial  # measures time or latency, or kills services: runs alone


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_job_longer_than_the_visibility_timeout_runs_once(
    client: Any, setup: dict[str, Any], configure: Any, env: Any, tmp_path: Path
) -> None:
    need_service("Redis", "127.0.0.1", 6379)
    settings = configure(broker_url=f"{REDIS_URL}/7", broker_visibility_timeout_seconds=3, requeue_after_seconds=1)
    spec = {"max_steps": 60, "batch_size": 4, "eval_steps": 0, "save_steps": 20, "max_seq_length": 64}
    job = client.post(
        "/api/v1/jobs", json={"model_id": setup["model"], "dataset_version_id": setup["version"], "spec": spec}
    ).json()
    worker = _start_worker(
        settings, tmp_path / "worker.log", broker_visibility_timeout_seconds="3", requeue_after_seconds="1"
    )
    try:

        def status() -> str:
            return str(client.get(f"/api/v1/jobs/{job['id']}").json()["run"]["status"])

        wait_for(lambda: status() == "running", timeout=120, interval=0.3, what="the job to start")
        for _ in range(2):  # deliveries of the same run while it runs, as a broker redelivering would
            assert send_run(job["run"]["id"], "cpu")
        wait_for(lambda: status() in ("succeeded", "failed"), timeout=300, interval=1, what="the job to finish")
    finally:
        stop_process(worker)
    log = (tmp_path / "worker.log").read_text()
    run = client.get(f"/api/v1/jobs/{job['id']}").json()["run"]
    assert run["status"] == "succeeded" and run["attempt"] == 1, run
    ran_for = datetime.fromisoformat(run["finished_at"]) - datetime.fromisoformat(run["started_at"])
    assert ran_for.total_seconds() > 3 * 2  # well past the visibility timeout
    events = [e["message"] for e in client.get(f"/api/v1/runs/{run['id']}/events").json()]
    assert sum(e.startswith("Started attempt") for e in events) == 1, events
    assert log.count("is not claimable") >= 2, log[-3000:]
