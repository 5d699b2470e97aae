"""A warm worker keeps one training child ready with its imports done: the next training job runs in it,
writes its log where a fresh child's would go and trains the same, and a new spare takes its place; with
another environment, or for another kind of run, a fresh child runs."""

from __future__ import annotations

import os
from typing import Any

import pytest

from app.core.config import get_settings
from worker import lifecycle

SPEC = {"max_steps": 2, "batch_size": 4, "save_steps": 100, "eval_steps": 0, "max_seq_length": 64}


def _train(client: Any, setup: dict[str, Any]) -> dict[str, Any]:
    body = {"model_id": setup["model"], "dataset_version_id": setup["version"], "spec": SPEC}
    job = client.post("/api/v1/jobs", json=body).json()
    lifecycle.execute(job["run"]["id"])
    done = client.get(f"/api/v1/jobs/{job['id']}").json()
    assert done["run"]["status"] == "succeeded", done["run"]
    return done["run"]


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_the_next_training_job_runs_in_the_spare(
    client: Any, setup: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    spares = lifecycle.SpareTrainingChild()
    monkeypatch.setattr(lifecycle, "SPARES", spares)
    spares.enable()
    try:
        first = spares._proc
        assert first is not None and first.poll() is None
        run = _train(client, setup)
        assert first.poll() == 0  # it was given the job, ran it and exited
        log = get_settings().logs_dir / f"{run['id']}-attempt1.log"
        assert log.is_file()  # the spare's stderr went to this run's log
        second = spares._proc
        assert second is not None and second is not first and second.poll() is None  # ready for the next

        monkeypatch.setenv("REFINERY_SOMETHING_NEW", "1")  # another environment: the spare is not used
        run = _train(client, setup)
        assert second.poll() not in (None, 0)  # stopped by the worker rather than given the job or left behind
        assert run["result"]["steps"] == 2
    finally:
        spares.close()
    assert spares._proc is None and not spares.enabled


def test_a_spare_not_given_a_job_exits_when_the_worker_goes() -> None:
    spares = lifecycle.SpareTrainingChild()
    spares.enable()
    proc = spares._proc
    assert proc is not None and proc.stdin is not None
    spares.enabled = False
    spares._proc = None
    proc.stdin.close()  # what the worker's exit does to the pipe
    assert proc.wait(timeout=120) == 0
    assert spares.take(["python", "-m", "worker.cleaning.run", "{}"], get_settings().logs_dir / "x.log") is None
    assert os.environ.get("REFINERY_SOMETHING_NEW") is None
