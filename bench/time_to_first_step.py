"""Time to first step: from the launch API call (``POST /api/v1/jobs``) to the end of the first optimizer step
of a LoRA on SmolLM2-135M-Instruct, on the embedded default (SQLite, the embedded broker, a real Celery
worker process), with the breakdown that shows the slowest part:

- queue: the call returns, the worker claims the run;
- process start: the training child is spawned and Python reaches our training module;
- imports: torch, transformers, PEFT, TRL and datasets;
- tokenisation: the version's records rendered with the chat template and tokenised;
- model load: the safetensors weights and the adapter;
- trainer set-up (the trainer built, then its loop started), the loop's own start (data loader, optimiser),
  then the first step itself.

``cold``: the worker process is started right after the call (a worker that was not running); ``warm``: the
same worker, already running and idle, takes the next launch.

    .venv/bin/python bench/time_to_first_step.py

Writes bench/results/time_to_first_step.json and .md.
"""

from __future__ import annotations

import json
import os
import platform
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT / "tests" / "fixtures" / "datasets"
RESULTS = ROOT / "bench" / "results"
DATA = ROOT / "bench" / ".cache" / "ttfs-data"
PHASES = [
    ("queue", "clicked", "claimed"),
    ("process start", "claimed", "run_called"),
    ("imports", "run_called", "imported"),
    ("tokenisation", "imported", "tokenised"),
    ("model load", "tokenised", "model_loaded"),
    ("trainer set-up", "model_loaded", "loop_started"),
    ("loop start", "loop_started", "first_step_began"),
    ("first step", "first_step_began", "first_step"),
]
SPEC = {"max_steps": 3, "batch_size": 4, "eval_steps": 0, "max_seq_length": 256, "save_steps": 1000}


def configure() -> None:
    shutil.rmtree(DATA, ignore_errors=True)
    os.environ |= {
        "REFINERY_DATA_DIR": str(DATA),
        "REFINERY_QUEUE_PREFIX": f"b{uuid.uuid4().hex[:8]}",
        "REFINERY_IMPORT_BUNDLED_MODEL": "false",
        "REFINERY_HUB_ENDPOINT": "http://127.0.0.1:9",
        # the evaluation that follows each job, kept small so that the worker is soon idle again
        "REFINERY_EVAL_SAMPLE_SIZE": "2",
        "REFINERY_EVAL_LOSS_RECORDS": "4",
        "REFINERY_EVAL_PROBE_SIZE": "0",
        "REFINERY_EVAL_MAX_NEW_TOKENS": "8",
    }
    os.environ.pop("REFINERY_DATABASE_URL", None)
    os.environ.pop("REFINERY_BROKER_URL", None)
    from app.core.config import get_settings

    get_settings().ensure_dirs()


def wait(check: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.2)
    raise SystemExit(f"timed out after {timeout:.0f} s waiting for {what}")


def setup(client: Any) -> tuple[str, str]:
    """An admin, SmolLM2 imported from the converted directory, 200 alpaca records validated."""
    from worker import lifecycle

    token = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/setup").text)
    assert token
    password = secrets.token_urlsafe(16)  # a throwaway admin in a throwaway data directory
    form = {"email": "bench@example.com", "password": password, "password_again": password}
    client.post("/setup", data=form | {"csrf_token": token.group(1)})
    page = client.get("/models").text
    token = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert token, "setup did not log in"
    client.headers["X-CSRF-Token"] = token.group(1)
    model_dir = ROOT / "bench" / ".cache" / "smollm2"
    if not (model_dir / "model.safetensors").is_file():
        sys.path.insert(0, str(ROOT / "bench"))
        from training_throughput import prepare_model

        prepare_model()
    model = client.post("/api/v1/models/local", json={"name": "smollm2", "path": str(model_dir)}).json()
    lifecycle.execute(model["import_run"]["id"])
    rows = json.loads((SHARED / "alpaca_5000.json").read_text())[:200]
    upload = DATA / "alpaca_200.json"
    upload.write_text(json.dumps(rows))
    with upload.open("rb") as handle:
        dataset = client.post("/api/v1/datasets", files={"file": ("alpaca_200.json", handle)}).json()
    lifecycle.execute(dataset["validation_run"]["id"])
    version = client.get(f"/api/v1/datasets/{dataset['id']}").json()["versions"][0]
    return model["id"], version["id"]


def start_worker(log: Path) -> subprocess.Popen[bytes]:
    from app.cli import worker_argv

    env = {k: v for k, v in os.environ.items()}
    return subprocess.Popen(  # a process we start and stop by its group
        worker_argv(["cpu", "gpu"], 1),
        cwd=ROOT,
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def launch(client: Any, model_id: str, version_id: str) -> tuple[str, float]:
    clicked = time.time()
    job = client.post("/api/v1/jobs", json={"model_id": model_id, "dataset_version_id": version_id, "spec": SPEC})
    assert job.status_code in (201, 202), job.text
    return job.json()["run"]["id"], clicked


def finished(run_id: str) -> Any:
    from app.db.models import Run, RunStatus
    from app.db.session import session_scope

    with session_scope() as session:
        run = session.get(Run, uuid.UUID(run_id))
        assert run is not None
        if run.status == RunStatus.failed:
            raise SystemExit(f"the training run failed: {run.error_message}")
        if run.status != RunStatus.succeeded or run.started_at is None:
            return None
        return {"claimed": run.started_at.timestamp(), **(run.result or {}).get("timeline", {})}


def idle() -> bool:
    from sqlalchemy import select

    from app.db.models import Run, RunStatus
    from app.db.session import session_scope

    with session_scope() as session:
        statuses = session.scalars(select(Run.status)).all()
        return all(s in (RunStatus.succeeded, RunStatus.failed, RunStatus.cancelled) for s in statuses)


def breakdown(name: str, times: dict[str, float]) -> dict[str, Any]:
    phases = {label: round(times[end] - times[start], 2) for label, start, end in PHASES}
    return {"case": name, "total": round(times["first_step"] - times["clicked"], 2), "phases": phases}


def main() -> None:
    configure()
    from fastapi.testclient import TestClient

    from app.db.migrations import upgrade_to_head
    from app.main import create_app

    upgrade_to_head()
    cases = []
    with TestClient(create_app()) as client:
        model_id, version_id = setup(client)
        run_id, clicked = launch(client, model_id, version_id)
        worker = start_worker(DATA / "worker.log")
        try:
            times = wait(lambda: finished(run_id), 600, "the cold run")
            cases.append(breakdown("cold", {"clicked": clicked, **times}))
            wait(idle, 600, "the worker to finish the evaluation that follows the job")
            time.sleep(2)
            run_id, clicked = launch(client, model_id, version_id)
            times = wait(lambda: finished(run_id), 600, "the warm run")
            cases.append(breakdown("warm", {"clicked": clicked, **times}))
            wait(idle, 600, "the worker to finish")
        finally:
            if worker.poll() is None:
                os.killpg(worker.pid, signal.SIGTERM)
                try:
                    worker.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    os.killpg(worker.pid, signal.SIGKILL)
    report = {"machine": {"platform": platform.platform(), "cpus": len(os.sched_getaffinity(0))}, "spec": SPEC}
    report["cases"] = cases
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "time_to_first_step.json").write_text(json.dumps(report, indent=2) + "\n")
    header = "| case | total (s) | " + " | ".join(label for label, _s, _e in PHASES) + " |"
    lines = [header, "|---|" + "---:|" * (len(PHASES) + 1)]
    for case in cases:
        cells = " | ".join(f"{case['phases'][label]:.2f}" for label, _s, _e in PHASES)
        lines.append(f"| {case['case']} | {case['total']:.2f} | {cells} |")
    (RESULTS / "time_to_first_step.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
