"""The adapter registry and lineage on the tiny model: a job's adapter is listed with what made it; its
lineage walks back to the upload and forward to its evaluation, the playground feedback on its answers, the
preference dataset made from that feedback and the DPO job trained on it. Tags; another user's → 404."""

from __future__ import annotations

import json
from pathlib import Path
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


def assert_merged_matches(client: Any, job: dict[str, Any], tmp_path: Path) -> None:
    import io
    import zipfile

    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    download = client.get(f"/api/v1/adapters/{job['id']}/merged.zip")
    assert download.status_code == 200
    with zipfile.ZipFile(io.BytesIO(download.content)) as archive:
        names = archive.namelist()
        assert "model.safetensors" in names and "README.md" in names and "tokenizer.json" in names
        assert not [n for n in names if n.endswith((".bin", ".pt", ".pkl"))]
        assert "no PEFT needed" in archive.read("README.md").decode()
        archive.extractall(tmp_path / "merged")
    from app.core.config import get_settings

    artifacts = get_settings().artifacts_dir
    base_dir = next((artifacts / "models").glob("*/config.json")).parent
    adapter_dir = artifacts / "jobs" / job["id"].replace("-", "") / "final"
    ids = torch.tensor([[1, 5, 9, 42, 7, 3]])
    with torch.no_grad():
        reference = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(str(base_dir)), str(adapter_dir))
        expected = reference(input_ids=ids).logits
        merged = AutoModelForCausalLM.from_pretrained(str(tmp_path / "merged")).eval()
        got = merged(input_ids=ids).logits
        plain = AutoModelForCausalLM.from_pretrained(str(base_dir))(input_ids=ids).logits
    assert torch.allclose(got, expected, atol=1e-4), (got - expected).abs().max()
    assert not torch.allclose(got, plain, atol=1e-4)  # the merge changed the base weights


def test_registry_lineage_and_tags(client: Any, setup: dict[str, Any], tmp_path: Path) -> None:
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

    # merged into the base: a background run, then a zip that loads with transformers alone and gives the
    # same logits as base + adapter
    assert client.get(f"/adapters/{job['id']}/merged.zip").status_code == 409  # not merged yet
    run = client.post(f"/api/v1/adapters/{job['id']}/merge")
    assert run.status_code == 202
    assert 'id="merge-live" hx-get=' in client.get(f"/adapters/{job['id']}").text
    lifecycle.execute(run.json()["id"])
    assert client.get(f"/api/v1/adapters/{job['id']}").json()["merged"] is True
    assert client.post(f"/api/v1/adapters/{job['id']}/merge").status_code == 409  # ready already
    assert_merged_matches(client, job, tmp_path)
    # the command line: the adapter, or the merged model (merging first when it is not merged yet)
    from app.cli import main as cli

    assert cli(["adapters", "export", job["id"], str(tmp_path / "cli-adapter")]) == 0
    assert {"adapter_model.safetensors", "adapter_config.json", "README.md"} <= {
        p.name for p in (tmp_path / "cli-adapter").iterdir()
    }
    exported = json.loads((tmp_path / "cli-adapter" / "adapter_config.json").read_text())
    assert exported["base_model_name_or_path"] == "tiny"  # the base as people know it, not a server path
    assert cli(["adapters", "export", dpo["id"], str(tmp_path / "cli-merged"), "--merged"]) == 0
    assert (tmp_path / "cli-merged" / "model.safetensors").is_file()
    assert client.get(f"/api/v1/adapters/{dpo['id']}").json()["merged"] is True
    assert cli(["adapters", "export", job["id"], str(tmp_path / "cli-adapter")]) == 2  # not empty
    prompt_tuned = _train(client, setup["model"], setup["version"], adapter="prompt_tuning", max_steps=1)
    refused = client.post(f"/api/v1/adapters/{prompt_tuned['id']}/merge")
    assert refused.status_code == 422 and "LoRA" in refused.json()["error"]["message"]

    # delete, with what depends on it shown first
    dependents = client.get(f"/api/v1/adapters/{job['id']}/dependents").json()
    assert dependents["evaluations"] == [evaluation["id"]] and dependents["merged"] is True
    assert dependents["preference_datasets"] == [preference_id] and dependents["running"] == []
    page = client.get(f"/adapters/{job['id']}").text
    body = page[page.index("</title>") :]  # the card is in the page, not in its title
    assert 'id="dependents"' in body and "1 evaluation" in body and f'action="/adapters/{job["id"]}/delete"' in body
    refused = client.post(f"/adapters/{job['id']}/delete", data={})
    assert refused.status_code == 422
    deleted = client.post(f"/adapters/{job['id']}/delete", data={"confirm": "yes"}, follow_redirects=False)
    assert deleted.status_code == 303
    assert client.get(f"/api/v1/adapters/{job['id']}").status_code == 404
    assert client.get(f"/api/v1/evaluations/{evaluation['id']}").status_code == 404
    from app.core.config import get_settings

    assert not (get_settings().artifacts_dir / "jobs" / job["id"].replace("-", "")).exists()
    assert client.delete(f"/api/v1/adapters/{prompt_tuned['id']}").status_code == 204
    assert client.get(f"/api/v1/adapters/{dpo['id']}/lineage").status_code == 200  # what was made stays
    job = dpo  # the checks below use an adapter that still exists

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
        ("post", f"/adapters/{job['id']}/merge"),
        ("get", f"/adapters/{job['id']}/merged.zip"),
        ("get", f"/api/v1/adapters/{job['id']}/merged.zip"),
        ("post", f"/api/v1/adapters/{job['id']}/merge"),
        ("get", f"/api/v1/adapters/{job['id']}/dependents"),
        ("delete", f"/api/v1/adapters/{job['id']}"),
        ("post", f"/adapters/{job['id']}/delete"),
    ]:
        assert getattr(client, method)(url).status_code == 404, url
    assert client.put(f"/api/v1/adapters/{job['id']}/tags", json={"tags": []}).status_code == 404
