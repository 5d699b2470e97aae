"""The adapter registry and lineage on the tiny model: a job's adapter is listed with what made it; its
lineage walks back to the upload and forward to its evaluation, the playground feedback on its answers, the
preference dataset made from that feedback and the DPO job trained on it. Tags; another user's → 404."""

from __future__ import annotations

from typing import Any

from tests.conftest import csrf_of, login
from worker import lifecycle


def _train(client: Any, model: str, version: str, **spec: Any) -> dict[str, Any]:
    spec = {"max_steps": 2, "batch_size": 4, "eval_steps": 0, "save_steps": 1, "max_seq_length": 64, **spec}
    job = client.post("/api/v1/jobs", json={"model_id": model, "dataset_version_id": version, "spec": spec}).json()
    assert "run" in job, job
    lifecycle.execute(job["run"]["id"])
    assert client.get(f"/api/v1/jobs/{job['id']}").json()["status"] == "succeeded"
    return dict(job)


def test_registry_lineage_and_tags(client: Any, setup: dict[str, Any]) -> None:
    job = _train(client, setup["model"], setup["version"])
    queued = client.post(
        "/api/v1/jobs", json={"model_id": setup["model"], "dataset_version_id": setup["version"], "spec": {}}
    ).json()  # not succeeded: not an adapter
    [adapter] = client.get("/api/v1/adapters").json()
    assert adapter["job_id"] == job["id"] and adapter["model"] == f"job-{job['id']}"
    assert adapter["base_model"] == "tiny" and adapter["method"] == "sft" and adapter["adapter"] == "lora"
    assert adapter["dataset_version"] == 1 and adapter["checkpoints"] == 2 and adapter["size_bytes"] > 0
    assert adapter["metrics"]["train_loss"] > 0 and adapter["created_by"] == "admin@example.com"
    assert client.get(f"/api/v1/adapters/{queued['id']}").status_code == 404

    # forward: an evaluation, feedback on the adapter's answers, a preference dataset, a DPO job on it
    [evaluation] = client.get("/api/v1/evaluations").json()
    lifecycle.execute(evaluation["run"]["id"])
    tuned, base = f"job-{job['id']}", f"base-{setup['model']}"
    prompt = [{"role": "user", "content": "Add 3 and 3."}]
    for answer_a, answer_b in (("6", "five"), ("It is 6.", "seven")):
        body = {"prompt": prompt, "model_a": tuned, "answer_a": answer_a, "model_b": base, "answer_b": answer_b}
        assert client.post("/playground/feedback", json={**body, "choice": "a"}).status_code == 201
    made = client.post("/playground/preferences", data={"name": "prefs"}, follow_redirects=False)
    preference_id = made.headers["location"].rsplit("/", 1)[1]
    lifecycle.execute(client.get(f"/api/v1/datasets/{preference_id}").json()["validation_run"]["id"])
    preference_version = client.get(f"/api/v1/datasets/{preference_id}").json()["versions"][0]["id"]
    dpo = _train(client, setup["model"], preference_version, method="dpo", max_steps=1)

    lineage = client.get(f"/api/v1/adapters/{job['id']}/lineage").json()
    training = lineage["training_data"]
    assert training["uploads"][0]["filename"] == "chat.jsonl" and len(training["uploads"][0]["sha256"]) == 64
    assert training["versions"][0]["number"] == 1 and training["validation"]["invalid_lines"] == 0
    assert lineage["evaluations"] == [evaluation["id"]]
    assert lineage["feedback"] == {"count": 2, "used": 2}
    assert lineage["preference_datasets"] == [{"dataset_id": preference_id, "trained_jobs": [dpo["id"]]}]
    page = client.get(f"/adapters/{job['id']}")
    assert page.status_code == 200 and "chat.jsonl" in page.text and f'href="/adapters/{dpo["id"]}"' in page.text
    assert f'href="/evaluations/{evaluation["id"]}"' in page.text

    # tags: set, filter, refuse bad ones
    tagged = client.put(f"/api/v1/adapters/{job['id']}/tags", json={"tags": ["prod", "sums"]}).json()
    assert tagged["tags"] == ["prod", "sums"]
    assert [a["job_id"] for a in client.get("/api/v1/adapters?tag=prod").json()] == [job["id"]]
    assert [a["job_id"] for a in client.get("/api/v1/adapters").json()] == [dpo["id"], job["id"]]
    bad = client.put(f"/api/v1/adapters/{job['id']}/tags", json={"tags": ["<script>"]})
    assert bad.status_code == 422 and bad.json()["error"]["field"] == "tags"
    form = client.post(f"/adapters/{job['id']}/tags", data={"tags": "prod, v2"}, follow_redirects=False)
    assert form.status_code == 303
    listing = client.get("/adapters?tag=v2")
    assert listing.status_code == 200 and f'data-adapter="{job["id"]}"' in listing.text
    assert f'data-adapter="{dpo["id"]}"' not in listing.text

    # another user: nothing of this one's
    client.post("/api/v1/users", json={"email": "eve@example.com", "password": "eve-password-1"})
    client.post("/logout", data={"csrf_token": client.headers.pop("X-CSRF-Token")})
    login(client, "eve@example.com", "eve-password-1")
    client.headers["X-CSRF-Token"] = csrf_of(client, "/models")
    assert client.get("/api/v1/adapters").json() == []
    for method, url in [
        ("get", f"/api/v1/adapters/{job['id']}"),
        ("get", f"/api/v1/adapters/{job['id']}/lineage"),
        ("get", f"/adapters/{job['id']}"),
        ("post", f"/adapters/{job['id']}/tags"),
    ]:
        assert getattr(client, method)(url).status_code == 404, url
    assert client.put(f"/api/v1/adapters/{job['id']}/tags", json={"tags": []}).status_code == 404
