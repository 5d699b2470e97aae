"""A whole worker killed outright (SIGKILL to its process group) in the middle of a training job: its
training child, in a session of its own, notices it lost its parent and dies too, so no two attempts ever
train at once; a new worker's reconciler re-queues the job once its lease expires (5 s here, not the
broker's hour) and attempt 2 resumes from the last complete checkpoint and succeeds."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import stop_process, wait_for
from tests.runs.test_queue_workers import _start_worker

pytestmark = pytest.mark.serial  # measures time or latency, or kills services: runs alone


def _training_children(data_dir: Path) -> list[int]:
    """Pids of training children (or spares) started for this data directory."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes()
            environ = (proc / "environ").read_bytes()
        except OSError:
            continue
        if b"worker.training" in cmdline and f"REFINERY_DATA_DIR={data_dir}".encode() in environ.split(b"\0"):
            found.append(int(proc.name))
    return found


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)  # ownership and leases are the same SQL on both
def test_worker_killed_mid_job_is_requeued_and_resumed_by_a_new_worker(
    client: Any, setup: dict[str, Any], env: Any, tmp_path: Path
) -> None:
    spec = {"max_steps": 40, "batch_size": 4, "eval_steps": 0, "save_steps": 4, "max_seq_length": 64}
    job = client.post(
        "/api/v1/jobs", json={"model_id": setup["model"], "dataset_version_id": setup["version"], "spec": spec}
    ).json()
    first = _start_worker(env, tmp_path / "worker1.log")
    try:

        def checkpoints() -> list[str]:
            return [c["name"] for c in client.get(f"/api/v1/jobs/{job['id']}/checkpoints").json()]

        wait_for(lambda: len(checkpoints()) >= 2, timeout=180, interval=0.3, what="two complete checkpoints")
        assert client.get(f"/api/v1/jobs/{job['id']}").json()["run"]["attempt"] == 1
        children = _training_children(env.data_dir)
        assert children  # the child is seen while it trains, told which process supervises it
        assert all(b"REFINERY_SUPERVISOR_PID=" in Path(f"/proc/{pid}/environ").read_bytes() for pid in children)
        os.killpg(first.pid, signal.SIGKILL)  # the worker and its pool, as a pulled plug would
        first.wait(timeout=10)
    finally:
        stop_process(first)
    # the orphaned training child is gone within a second or two, long before any new attempt
    wait_for(lambda: not _training_children(env.data_dir), timeout=10, interval=0.2, what="the orphan to exit")
    kept = checkpoints()
    second = _start_worker(env, tmp_path / "worker2.log")
    try:

        def finished() -> bool:
            return client.get(f"/api/v1/jobs/{job['id']}").json()["run"]["status"] in ("succeeded", "failed")

        wait_for(finished, timeout=300, interval=1, what="attempt 2 to finish")
    finally:
        stop_process(second)
        print((tmp_path / "worker2.log").read_text()[-3000:])
    run = client.get(f"/api/v1/jobs/{job['id']}").json()["run"]
    assert run["status"] == "succeeded" and run["attempt"] == 2, run
    assert run["result"]["resumed_from"] == kept[-1]
    events = [e["message"] for e in client.get(f"/api/v1/runs/{run['id']}/events").json()]
    starts = [e for e in events if e.startswith("Started attempt")]
    assert len(starts) == 2, events


def test_ranks_under_a_launcher_exit_with_the_worker_not_the_launcher() -> None:
    """Multi-GPU jobs run as worker → ``accelerate launch`` (torchrun) → ranks. A launcher outlives a killed
    worker, so a rank that only watched its parent would train on; each rank also watches the worker whose
    pid ``child_env`` gave it, and leaves even while the dead worker is an unreaped zombie."""
    from worker.protocol import process_alive

    rank = (
        "import os, time; from worker.protocol import exit_with_parent; exit_with_parent(0.1); "
        "print(os.getpid(), flush=True); time.sleep(120)"
    )
    launcher = f"import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', {rank!r}]); time.sleep(120)"
    worker = textwrap.dedent(f"""
        import subprocess, sys, time
        from worker.protocol import child_env
        launcher = subprocess.Popen([sys.executable, '-c', {launcher!r}], env=child_env(), start_new_session=True)
        print(launcher.pid, flush=True)
        time.sleep(120)
    """)
    # every process writes to this pipe: the worker the launcher's pid, the rank its own once it watches
    proc = subprocess.Popen([sys.executable, "-c", worker], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    launcher_pid = rank_pid = 0
    try:
        launcher_pid = int(proc.stdout.readline())
        rank_pid = int(proc.stdout.readline())
        os.kill(proc.pid, signal.SIGKILL)  # the worker, not reaped yet: a zombie until proc.wait() below
        wait_for(lambda: not process_alive(rank_pid), timeout=10, interval=0.1, what="the rank to exit")
        assert process_alive(launcher_pid)  # the launcher is still there: watching the parent alone was not enough
    finally:
        proc.kill()
        proc.wait(timeout=10)
        for pid in (rank_pid, launcher_pid):
            if pid and process_alive(pid):
                os.kill(pid, signal.SIGKILL)
