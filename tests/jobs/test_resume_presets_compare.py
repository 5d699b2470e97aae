"""Resume a stopped job from a checkpoint it kept, presets (built-in and saved), comparing runs, and the
choices the form refuses for the newer methods. Jobs train for real (a child process on the tiny model)."""

from __future__ import annotations

import re
import uuid
from typing import Any

import pytest

from tests.conftest import csrf_of, login
from worker import lifecycle


def _launch(client: Any, setup: dict[str, Any], spec: dict[str, Any], name: str = "") -> dict[str, Any]:
    body = {"name": name, "model_id": setup["model"], "dataset_version_id": setup["version"], "spec": spec}
    response = client.post("/api/v1/jobs", json=body)
    assert response.status_code == 201, response.text
    return response.json()


SMALL = {"batch_size": 4, "eval_steps": 0, "max_seq_length": 64}


# training twice; the job SQL runs on both in tests/jobs/test_jobs_api.py
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_resume_from_a_chosen_checkpoint(client: Any, setup: dict[str, Any]) -> None:
    source = _launch(client, setup, {**SMALL, "max_steps": 4, "save_steps": 2, "save_total_limit": 3}, "first")
    assert client.post(f"/api/v1/jobs/{source['id']}/resume", json={"checkpoint": "checkpoint-2"}).status_code == 422
    lifecycle.execute(source["run"]["id"])
    checkpoints = client.get(f"/api/v1/jobs/{source['id']}/checkpoints").json()
    assert [c["name"] for c in checkpoints] == ["checkpoint-2", "checkpoint-4"]
    assert checkpoints[0]["loss"] is not None and checkpoints[0]["size_bytes"] > 0
    page = client.get(f"/jobs/{source['id']}")
    assert f"/jobs/new?from={source['id']}&amp;checkpoint=checkpoint-2" in page.text
    form = client.get(f"/jobs/new?from={source['id']}&checkpoint=checkpoint-2")
    assert form.status_code == 200 and 'name="resume_checkpoint" value="checkpoint-2"' in form.text
    assert client.get(f"/jobs/new?from={source['id']}&checkpoint=checkpoint-3").status_code == 404

    for bad in ("checkpoint-3", "../../etc", "checkpoint-2/../checkpoint-4"):
        refused = client.post(f"/api/v1/jobs/{source['id']}/resume", json={"checkpoint": bad})
        assert refused.status_code == 422, bad
    other_adapter = client.post(
        f"/api/v1/jobs/{source['id']}/resume",
        json={"checkpoint": "checkpoint-2", "spec": {**SMALL, "max_steps": 6, "adapter": "ia3"}},
    )
    assert other_adapter.status_code == 422 and other_adapter.json()["error"]["field"] == "adapter"

    resumed = client.post(
        f"/api/v1/jobs/{source['id']}/resume",
        json={"checkpoint": "checkpoint-2", "spec": {**SMALL, "max_steps": 6, "save_steps": 2}},
    )
    assert resumed.status_code == 201, resumed.text
    job = resumed.json()
    assert job["cloned_from_id"] == source["id"] and job["resume_checkpoint"] == "checkpoint-2"
    lifecycle.execute(job["run"]["id"])
    done = client.get(f"/api/v1/jobs/{job['id']}").json()
    assert done["run"]["status"] == "succeeded", done["run"]
    assert done["run"]["result"]["resumed_from"] == "checkpoint-2" and done["run"]["result"]["steps"] == 6
    steps = [m["step"] for m in client.get(f"/api/v1/jobs/{job['id']}/metrics").json() if m["loss"] is not None]
    assert steps == [1, 2, 3, 4, 5, 6]  # the curve up to the checkpoint came along, then training went on
    # the first job's checkpoints are untouched
    assert [c["name"] for c in client.get(f"/api/v1/jobs/{source['id']}/checkpoints").json()] == [
        "checkpoint-2",
        "checkpoint-4",
    ]
    assert "Resumed from checkpoint-2" in client.get(f"/jobs/{job['id']}").text
    # a plain "Clone with changes" is a clone, not a resumption: lineage and the delete warning say which
    form = {
        "name": "a clone",
        "model_id": setup["model"],
        "dataset_version_id": setup["version"],
        "max_steps": "2",
        "cloned_from": source["id"],
        "csrf_token": client.headers["X-CSRF-Token"],
    }
    made = client.post("/jobs", data=form, follow_redirects=False)
    assert made.status_code == 303, made.text
    clone_id = made.headers["location"].rsplit("/", 1)[1]
    clone = client.get(f"/api/v1/jobs/{clone_id}").json()
    assert clone["cloned_from_id"] == source["id"] and clone["resume_checkpoint"] is None
    found = client.get(f"/api/v1/adapters/{source['id']}/dependents").json()
    assert found["resumed_by"] == [job["id"]] and found["cloned_by"] == [clone_id]
    adapter_page = client.get(f"/adapters/{source['id']}").text
    assert f'data-follow-up="resumed">Resumed by <a href="/jobs/{job["id"]}">' in adapter_page
    assert f'data-follow-up="cloned">Cloned by <a href="/jobs/{clone_id}">' in adapter_page


def test_presets_builtin_and_saved(client: Any, setup: dict[str, Any]) -> None:
    listed = client.get("/api/v1/presets").json()
    assert {"cpu-quick-lora", "qlora-24gb", "dpo-lora"} <= {p["id"] for p in listed if p["builtin"]}
    quick = client.get("/jobs/new?preset=cpu-quick-lora")
    assert quick.status_code == 200 and 'name="max_steps" value="30"' in quick.text
    form = {
        "model_id": setup["model"],
        "dataset_version_id": setup["version"],
        "method": "sft",
        "adapter": "lora",
        "lora_r": "4",
        "max_steps": "12",
        "preset_name": "my small LoRA",
    }
    saved = client.post("/jobs/presets", data=form, follow_redirects=False)
    assert saved.status_code == 303
    location = saved.headers["location"]
    page = client.get(location)
    assert 'name="lora_r" value="4"' in page.text and 'name="max_steps" value="12"' in page.text
    assert "Preset saved" in page.text and "my small LoRA" in page.text
    again = client.post("/jobs/presets", data=form)
    assert again.status_code == 409 and "already have a preset named my small LoRA" in again.text
    nameless = client.post("/jobs/presets", data={**form, "preset_name": "  "})
    assert nameless.status_code == 422
    preset_id = re.search(r"preset=([0-9a-f-]{36})", location).group(1)  # type: ignore[union-attr]
    mine = [p for p in client.get("/api/v1/presets").json() if not p["builtin"]]
    assert mine == [{"id": preset_id, "name": "my small LoRA", "builtin": False, "spec": mine[0]["spec"]}]
    assert mine[0]["spec"]["lora_r"] == 4

    # another user sees neither the preset nor can delete it
    client.post("/api/v1/users", json={"email": "eve@example.com", "password": "eve-password-1"})
    admin_token = client.headers.pop("X-CSRF-Token")
    client.post("/logout", data={"csrf_token": admin_token})
    login(client, "eve@example.com", "eve-password-1")
    client.headers["X-CSRF-Token"] = csrf_of(client, "/models")
    assert client.get(f"/jobs/new?preset={preset_id}").status_code == 404
    assert client.delete(f"/api/v1/presets/{preset_id}").status_code == 404
    assert client.post(f"/jobs/presets/{preset_id}/delete").status_code == 404
    assert all(p["builtin"] for p in client.get("/api/v1/presets").json())
    assert client.get(f"/jobs/new?preset={uuid.uuid4()}").status_code == 404
    assert client.get("/jobs/new?preset=no-such-preset").status_code == 404


# training twice; the job SQL runs on both in tests/jobs/test_jobs_api.py
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_compare_runs(client: Any, setup: dict[str, Any]) -> None:
    first = _launch(client, setup, {**SMALL, "max_steps": 2, "learning_rate": 0.001}, "slow lr")
    second = _launch(client, setup, {**SMALL, "max_steps": 3, "learning_rate": 0.01}, "fast lr")
    for job in (first, second):
        lifecycle.execute(job["run"]["id"])
    page = client.get(f"/jobs/compare?id={first['id']}&id={second['id']}")
    assert page.status_code == 200
    assert 'data-field="learning_rate"' in page.text and 'data-field="max_steps"' in page.text
    assert 'data-field="lora_r"' not in page.text  # only what differs
    assert "slow lr" in page.text and "fast lr" in page.text and 'data-metric="train_loss"' in page.text
    assert "&#34;loss&#34;: [[1," in page.text  # both curves travel to the chart
    # rows are named in words, in the reader's language, never by their field names
    assert '<tr data-field="learning_rate"><th>Learning rate</th>' in page.text
    assert '<tr data-metric="train_loss"><th>Training loss</th>' in page.text
    client.post("/locale", data={"locale": "zh_Hans", "csrf_token": client.headers["X-CSRF-Token"]})
    chinese = client.get(f"/jobs/compare?id={first['id']}&id={second['id']}").text
    assert '<tr data-metric="train_loss"><th>训练损失</th>' in chinese
    assert "<th>train_loss</th>" not in chinese and "<th>learning_rate</th>" not in chinese
    client.post("/locale", data={"locale": "en", "csrf_token": client.headers["X-CSRF-Token"]})
    assert client.get(f"/jobs/compare?id={first['id']}").status_code == 422
    assert client.get("/jobs/compare?id=not-a-uuid&id=x").status_code == 404
    index = client.get("/jobs")
    assert 'action="/jobs/compare"' in index.text and f'value="{first["id"]}"' in index.text


def test_newer_methods_refuse_what_cannot_work(client: Any, setup: dict[str, Any]) -> None:
    base = {"model_id": setup["model"], "dataset_version_id": setup["version"]}

    def refused(spec: dict[str, Any]) -> dict[str, Any]:
        response = client.post("/api/v1/jobs", json={**base, "spec": spec})
        assert response.status_code == 422, response.text
        return dict(response.json()["error"])

    kto = refused({"method": "kto"})
    assert kto["field"] == "method" and "label" in kto["message"]
    grpo = refused({"method": "grpo"})
    assert grpo["field"] == "reward_job_id" and "Reward model" in grpo["message"]
    stranger = refused({"method": "rloo", "reward_job_id": str(uuid.uuid4())})
    assert stranger["field"] == "reward_job_id"
    uneven = refused({"method": "grpo", "reward_job_id": str(uuid.uuid4()), "batch_size": 3, "num_generations": 2})
    assert uneven["field"] in ("reward_job_id", "num_generations")
    prefix = refused({"method": "reward", "adapter": "prefix_tuning"})
    assert prefix["field"] in ("method", "adapter")
    stranger_start = refused({"start_from_job_id": str(uuid.uuid4())})
    assert stranger_start["field"] == "start_from_job_id" and "No such job" in stranger_start["message"]
    queued = client.post("/api/v1/jobs", json={**base, "spec": {"max_steps": 1}}).json()
    assert "not succeeded" in refused({"start_from_job_id": queued["id"]})["message"]
    client.post(f"/api/v1/jobs/{queued['id']}/cancel")
    check = {
        "type": "string_check",
        "name": "c",
        "input": "{{ sample.output_text }}",
        "reference": "a",
        "operation": "eq",
    }
    assert refused({"method": "sft", "grader": check})["field"] == "grader"
    both = refused({"method": "grpo", "grader": check, "reward_job_id": str(uuid.uuid4())})
    assert both["field"] in ("grader", "reward_job_id")
    gpus = refused({"num_gpus": 2})
    assert gpus["field"] == "num_gpus" and "GPU" in gpus["message"]
    form = client.get("/jobs/new")
    assert 'data-methods="grpo rloo"' in form.text and 'name="reward_job_id"' in form.text
    assert "No reward model yet" in form.text
