"""An evaluation end to end on the tiny model: it starts by itself when a job succeeds, runs as a real child,
stores its report; the report page draws the scores and shows samples; evaluate again; compare; 404s."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import csrf_of, login, make_admin
from worker import lifecycle


@pytest.fixture
def trained(client: Any, tiny_model_dir: Path, tmp_path: Path) -> dict[str, Any]:
    make_admin(client)
    client.headers["X-CSRF-Token"] = csrf_of(client, "/models")
    model = client.post("/api/v1/models/local", json={"name": "tiny", "path": str(tiny_model_dir)}).json()
    lifecycle.execute(model["import_run"]["id"])
    rows = []
    for i in range(60):  # every prompt twice (with different answers): test prompts also appear in train
        for answer in (f"{2 * i}", f"It is {2 * i}."):
            question = {"role": "user", "content": f"Add {i} and {i}."}
            rows.append({"messages": [question, {"role": "assistant", "content": answer}]})
    path = tmp_path / "sums.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    with path.open("rb") as handle:
        dataset = client.post("/api/v1/datasets", files={"file": ("sums.jsonl", handle)}).json()
    lifecycle.execute(dataset["validation_run"]["id"])
    version = client.get(f"/api/v1/datasets/{dataset['id']}").json()["versions"][0]
    assert version["split_counts"]["test"] >= 3
    spec = {"max_steps": 3, "batch_size": 4, "eval_steps": 0, "max_seq_length": 64, "learning_rate": 5e-3}
    job = client.post(
        "/api/v1/jobs", json={"model_id": model["id"], "dataset_version_id": version["id"], "spec": spec}
    ).json()
    lifecycle.execute(job["run"]["id"])
    assert client.get(f"/api/v1/jobs/{job['id']}").json()["status"] == "succeeded"
    return {"job": job, "version": version}


def test_evaluation_runs_after_training_and_reports(client: Any, trained: dict[str, Any]) -> None:
    job = trained["job"]
    evaluations = client.get("/api/v1/evaluations").json()
    assert len(evaluations) == 1 and evaluations[0]["job_id"] == job["id"]  # started by itself
    first = evaluations[0]
    assert first["run"]["status"] == "queued" and first["summary"] is None
    page = client.get(f"/evaluations/{first['id']}")
    assert page.status_code == 200 and 'id="evaluation-live"' in page.text
    lifecycle.execute(first["run"]["id"])
    report = client.get(f"/api/v1/evaluations/{first['id']}").json()
    assert report["run"]["status"] == "succeeded", report["run"]
    summary = report["summary"]
    assert summary["loss"]["base"] > 0 and summary["loss"]["tuned"] > 0
    assert summary["perplexity"]["base"] == pytest.approx(2.718281828 ** summary["loss"]["base"], rel=1e-6)
    assert set(summary["scores"]) == {"base", "few_shot", "tuned"}
    for scores in summary["scores"].values():
        assert set(scores) == {"exact_match", "f1", "bleu", "rouge_l"}
        assert all(0.0 <= v <= 1.0 for v in scores.values())
    assert summary["few_shot_examples"] == 3 and summary["sample_size"] == summary["test_records"]
    assert summary["probe"]["records"] == 40 and summary["probe"]["loss"]["base"] > 0
    assert summary["contamination"]["count"] >= 1  # every test prompt has a twin in train
    assert report["verdict"]

    samples = client.get(f"/api/v1/evaluations/{first['id']}/samples").json()
    assert len(samples) == summary["sample_size"]
    assert all({"base", "few_shot", "tuned", "reference", "prompt"} <= set(s) for s in samples)
    diffs = [s["diff"] for s in samples]
    assert diffs == sorted(diffs, reverse=True)
    worst_first = [s["diff"] for s in client.get(f"/api/v1/evaluations/{first['id']}/samples?sort=-diff").json()]
    assert worst_first == sorted(diffs)

    page = client.get(f"/evaluations/{first['id']}")
    assert page.status_code == 200
    assert page.text.count("<rect") >= 12 and 'data-variant="few_shot"' in page.text  # 4 metrics × 3 models
    assert 'id="contamination"' in page.text and 'id="loss-table"' in page.text
    assert client.get(f"/jobs/{job['id']}").text.count("/evaluations/") >= 1

    # evaluate again on the validation split with fewer prompts, through the page's form
    again = client.post(
        f"/jobs/{job['id']}/evaluations",
        data={"dataset_version_id": trained["version"]["id"], "split": "validation", "sample_size": "2"},
        follow_redirects=False,
    )
    assert again.status_code == 303
    second_id = again.headers["location"].rsplit("/", 1)[1]
    second = client.get(f"/api/v1/evaluations/{second_id}").json()
    assert second["options"]["split"] == "validation" and second["options"]["sample_size"] == 2
    lifecycle.execute(second["run"]["id"])
    assert client.get(f"/api/v1/evaluations/{second_id}").json()["summary"]["sample_size"] == 2
    compared = client.get(f"/evaluations/compare?id={first['id']}&id={second_id}")
    assert compared.status_code == 200 and 'data-row="tuned-rouge_l"' in compared.text
    assert client.get(f"/evaluations/compare?id={first['id']}").status_code == 422
    bad = client.post(f"/jobs/{job['id']}/evaluations", data={"sample_size": "0"})
    assert bad.status_code == 422

    # another user sees none of it
    client.post("/api/v1/users", json={"email": "eve@example.com", "password": "eve-password-1"})
    client.post("/logout", data={"csrf_token": client.headers.pop("X-CSRF-Token")})
    login(client, "eve@example.com", "eve-password-1")
    client.headers["X-CSRF-Token"] = csrf_of(client, "/models")
    for method, url in [
        ("get", f"/evaluations/{first['id']}"),
        ("get", f"/evaluations/{first['id']}/_live"),
        ("get", f"/api/v1/evaluations/{first['id']}"),
        ("get", f"/api/v1/evaluations/{first['id']}/samples"),
        ("get", f"/evaluations/compare?id={first['id']}&id={second_id}"),
        ("post", f"/jobs/{job['id']}/evaluations"),
        ("post", f"/api/v1/jobs/{job['id']}/evaluations"),
    ]:
        kwargs = {"json": {}} if url.startswith("/api") and method == "post" else {}
        assert getattr(client, method)(url, **kwargs).status_code == 404, url
    assert client.get("/api/v1/evaluations").json() == []
    assert client.get(f"/evaluations/{uuid.uuid4()}").status_code == 404


def test_a_job_that_has_not_succeeded_cannot_be_evaluated(client: Any, setup: dict[str, Any]) -> None:
    spec = {"max_steps": 2, "max_seq_length": 64}
    body = {"model_id": setup["model"], "dataset_version_id": setup["version"], "spec": spec}
    queued = client.post("/api/v1/jobs", json=body).json()
    refused = client.post(f"/api/v1/jobs/{queued['id']}/evaluations", json={})
    assert refused.status_code == 422 and "succeeded" in refused.json()["error"]["message"]
