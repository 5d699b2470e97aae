"""Jobs through the API: launch on the tiny model, run for real (child process), metrics, events, zip, 404s."""

from __future__ import annotations

import io
import json
import re
import uuid
import zipfile
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import csrf_of, login
from worker import lifecycle


def test_launch_train_watch_and_download(client: Any, setup: dict[str, Any], tiny_model_dir: Path) -> None:
    body = {
        "name": "tiny sft",
        "model_id": setup["model"],
        "dataset_version_id": setup["version"],
        "spec": {"max_steps": 3, "batch_size": 4, "save_steps": 2, "eval_steps": 0, "max_seq_length": 128},
    }
    job = client.post("/api/v1/jobs", json=body)
    assert job.status_code == 201, job.text
    job = job.json()
    assert job["status"] == job["run"]["status"] == "queued" and not job["adapter_available"]
    assert client.get(f"/api/v1/jobs/{job['id']}/adapter").status_code == 409
    lifecycle.execute(job["run"]["id"])
    done = client.get(f"/api/v1/jobs/{job['id']}").json()
    assert done["run"]["status"] == "succeeded", done["run"]
    assert done["adapter_available"] and done["run"]["result"]["steps"] == 3 and done["status"] == "succeeded"
    metrics = client.get(f"/api/v1/jobs/{job['id']}/metrics").json()
    training = [m for m in metrics if m["loss"] is not None]
    assert [m["step"] for m in training] == [1, 2, 3] and all(m["loss"] > 0 for m in training)
    assert [m["step"] for m in metrics if m["eval_loss"] is not None] == [3]  # final evaluation on validation
    later = client.get(f"/api/v1/jobs/{job['id']}/metrics", params={"after": 2}).json()
    assert {m["step"] for m in later} == {3}
    events = [e["message"] for e in client.get(f"/api/v1/jobs/{job['id']}/events").json()]
    assert events[0] == "Queued." and events[-1] == "Succeeded."
    page = client.get(f"/jobs/{job['id']}")
    assert page.status_code == 200 and "Download adapter" in page.text
    # the trainer's log: what it printed (its logged metrics) beside its stderr, on the page and downloaded
    assert 'id="trainer-log"' in page.text and "===== attempt 1 =====" in page.text
    log = client.get(f"/api/v1/jobs/{job['id']}/log").text
    assert log.startswith("===== attempt 1 =====") and "'loss'" in log and '"progress"' not in log
    assert len(client.get(f"/api/v1/jobs/{job['id']}/log", params={"tail": 2}).text.splitlines()) == 2
    whole = client.get(f"/jobs/{job['id']}/log")
    assert "attachment" in whole.headers["content-disposition"] and whole.text.startswith("===== attempt 1")
    assert client.get(f"/api/v1/jobs/{job['id']}/log", params={"tail": 0}).text == whole.text
    assert client.get(f"/jobs/{job['id']}/_log").status_code == 204  # over: the page shows it whole
    # the job list says what each job trained on, how it ended and how long it took
    import re

    listed = client.get("/jobs").text
    row = listed[listed.index('data-job="tiny sft"') :].split("</tr>")[0]
    assert re.search(r"<td data-dataset>chat\.jsonl v1</td>", row), row
    final = f"{done['run']['result']['train_loss']:.3f}".rstrip("0").rstrip(".")
    assert re.search(rf"data-final-loss>{re.escape(final)}", row), (final, row)
    assert re.search(r"data-duration>(\d+ s|\d+ min \d\d s)<", row), row

    archive = client.get(f"/api/v1/jobs/{job['id']}/adapter")
    assert archive.status_code == 200 and "attachment" in archive.headers["content-disposition"]
    with zipfile.ZipFile(io.BytesIO(archive.content)) as zipped:
        names = set(zipped.namelist())
        assert {
            "adapter_model.safetensors",
            "adapter_config.json",
            "tokenizer.json",
            "chat_template.jinja",
            "README.md",
        } <= names
        assert not [n for n in names if n.endswith((".bin", ".pt", ".pkl"))]
        card = zipped.read("README.md").decode()
        assert "from **tiny**" in card and "chat.jsonl v1" in card and '"max_steps": 3' in card
        # the adapter names its base as people know it, never a path on this server
        config = json.loads(zipped.read("adapter_config.json"))
        assert config["base_model_name_or_path"] == "tiny" and str(tiny_model_dir) not in card
        unpacked = Path(str(tiny_model_dir)).parent / f"unzipped-{job['id'][:8]}"
        zipped.extractall(unpacked)
    # the adapter loads with plain peft, outside Refinery, and reproduces the trained model's logits
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from worker.training.train import probe_logits

    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(str(tiny_model_dir)), str(unpacked))
    probe = probe_logits(model, AutoTokenizer.from_pretrained(str(unpacked)))
    assert probe == pytest.approx(done["run"]["result"]["probe_logits"], abs=1e-3)


def test_incompatible_spec_is_refused_and_queued_job_cancels(client: Any, setup: dict[str, Any]) -> None:
    base = {"model_id": setup["model"], "dataset_version_id": setup["version"]}
    dpo = client.post("/api/v1/jobs", json={**base, "spec": {"method": "dpo"}})
    assert dpo.status_code == 422 and dpo.json()["error"]["field"] == "method"
    too_long = client.post("/api/v1/jobs", json={**base, "spec": {"max_seq_length": 100_000}})
    assert too_long.status_code == 422 and "2048" in too_long.json()["error"]["message"].replace(",", "")
    job = client.post("/api/v1/jobs", json={**base, "spec": {"max_steps": 2}}).json()
    cancelled = client.post(f"/api/v1/jobs/{job['id']}/cancel")
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    lifecycle.execute(job["run"]["id"])  # a delivery after cancel does nothing
    assert client.get(f"/api/v1/jobs/{job['id']}").json()["run"]["status"] == "cancelled"


def test_new_job_form_and_estimate(client: Any, setup: dict[str, Any]) -> None:
    page = client.get("/jobs/new")
    assert page.status_code == 200 and 'name="lora_r"' in page.text and "title=" in page.text
    estimate = client.post(
        "/jobs/estimate",
        data={
            "model_id": setup["model"],
            "dataset_version_id": setup["version"],
            "method": "sft",
            "adapter": "lora",
            "gpu_gib": "8",
        },
    )
    assert estimate.status_code == 200 and "Peak GPU memory" in estimate.text and 'data-fits="yes"' in estimate.text
    # no GPU workers: the panel leads with the RAM a CPU worker needs, worded as a need; the GPU figure follows
    text = estimate.text
    assert "data-cpu-memory=" in text and "needs about" in text
    assert text.index("data-cpu-memory=") < text.index("Peak GPU memory") and "It would fit a " in text
    api = client.post(
        "/api/v1/jobs/estimate",
        json={"model_id": setup["model"], "dataset_version_id": setup["version"], "spec": {"batch_size": 8}},
    ).json()
    assert api["cpu_memory_gib"] > 0 and api["memory"]["total"] > 0
    refused = client.post(
        "/jobs/estimate",
        data={
            "model_id": setup["model"],
            "dataset_version_id": setup["version"],
            "method": "sft",
            "adapter": "qlora",
            "gpu_gib": "8",
        },
    )
    assert 'data-problem="adapter"' in refused.text
    launched = client.post(
        "/jobs",
        data={"model_id": setup["model"], "dataset_version_id": setup["version"], "method": "sft", "adapter": "qlora"},
    )
    assert launched.status_code == 422 and "CUDA" in launched.text


def test_the_preview_command_makes_the_same_job(
    client: Any, setup: dict[str, Any], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """'Preview command' on the form: the /api/v1 request and the refinery CLI call it shows each make the job
    the form would, with the fields the user changed (and only those written out)."""
    import html
    import re
    import shlex

    from app.cli import main

    form = {
        "model_id": setup["model"],
        "dataset_version_id": setup["version"],
        "name": "it's previewed",
        "method": "sft",
        "adapter": "lora",
        "learning_rate": "0.0003",
        "max_steps": "7",
        "group_by_length": "on",  # the checkboxes ticked by default, as the browser sends them
        "assistant_only_loss": "on",
        "qlora_double_quant": "on",
    }
    panel = client.post("/jobs/estimate", data=form).text
    assert 'id="command-preview"' in panel
    curl = html.unescape(re.search(r'<pre class="mono" data-preview="curl">(.*?)</pre>', panel, re.S).group(1))
    cli = html.unescape(re.search(r'<pre class="mono" data-preview="cli">(.*?)</pre>', panel, re.S).group(1))
    words = shlex.split(curl.replace("\\\n", " "))
    assert words[:3] == ["curl", "-X", "POST"] and words[3].endswith("/api/v1/jobs")
    body = json.loads(words[words.index("-d") + 1])
    assert body["spec"] == {"learning_rate": 0.0003, "max_steps": 7}  # only what differs from the defaults
    made = client.post("/api/v1/jobs", json=body)
    assert made.status_code == 201, made.text
    by_api = made.json()

    command, _sep, rest = cli.partition(" --spec - <<'SPEC'\n")
    spec_yaml = rest.removesuffix("SPEC")
    args = shlex.split(command)
    assert args[:3] == ["refinery", "jobs", "create"]
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(spec_yaml.encode())))
    assert main([*args[1:], "--spec", "-"]) == 0
    queued = capsys.readouterr().out
    by_cli = client.get(f"/api/v1/jobs/{queued.split()[2]}").json()
    for job in (by_api, by_cli):
        assert (
            job["name"] == "it's previewed" and job["spec"]["learning_rate"] == 0.0003 and job["spec"]["max_steps"] == 7
        )
    assert by_cli["spec"] == by_api["spec"]
    for job in (by_api, by_cli):
        client.post(f"/api/v1/jobs/{job['id']}/cancel")
    bad = io.TextIOWrapper(io.BytesIO(b"learning_rate: -1\n"))
    monkeypatch.setattr("sys.stdin", bad)
    assert main([*args[1:], "--spec", "-"]) == 1
    assert "learning_rate" in capsys.readouterr().err


def test_the_method_follows_the_data_and_brings_its_defaults(
    client: Any, setup: dict[str, Any], tmp_path: Path
) -> None:
    """'Train on it' for preference pairs opens a DPO form with DPO's learning rate (not SFT's 2e-4); the form's
    script knows each method's defaults and usual rates; a learning rate far off is flagged, not refused."""
    from worker import lifecycle

    pairs = [{"prompt": f"Say {i}", "chosen": f"{i}", "rejected": "no"} for i in range(20)]
    path = tmp_path / "pairs.jsonl"
    path.write_text("\n".join(json.dumps(p) for p in pairs))
    with path.open("rb") as handle:
        dataset = client.post("/api/v1/datasets", files={"file": ("pairs.jsonl", handle)}).json()
    lifecycle.execute(dataset["validation_run"]["id"])
    version = client.get(f"/api/v1/datasets/{dataset['id']}").json()["versions"][0]
    assert version["kind_counts"] == {"preference": 20}
    form = client.get(f"/jobs/new?version={version['id']}").text
    assert '<option value="dpo" selected' in form
    assert re.search(r'name="learning_rate"[^>]*value="5e-06"', form), "DPO's learning rate"
    assert (
        f'value="{version["id"]}" data-method="dpo"' in form and f'value="{setup["version"]}" data-method="sft"' in form
    )
    assert "data-method-defaults=" in form and "data-usual-rates=" in form
    chat_form = client.get(f"/jobs/new?version={setup['version']}").text
    assert '<option value="sft" selected' in chat_form

    def warnings(spec: dict[str, Any]) -> list[dict[str, str]]:
        body = {"model_id": setup["model"], "dataset_version_id": version["id"], "spec": spec}
        answer = client.post("/api/v1/jobs/estimate", json=body)
        assert answer.status_code == 200, answer.text
        return list(answer.json()["warnings"])

    [far] = warnings({"method": "dpo", "learning_rate": 2e-4})
    assert far["field"] == "learning_rate" and "far above what DPO usually trains with" in far["message"]
    assert "5e-06 is the usual start" in far["message"]
    assert warnings({"method": "dpo", "learning_rate": 5e-6}) == []
    assert warnings({"method": "sft", "learning_rate": 2e-4}) == []
    assert "far below" in warnings({"method": "sft", "learning_rate": 1e-8})[0]["message"]
    assert warnings({"method": "sft", "adapter": "full", "learning_rate": 2e-5}) == []  # a tenth for full
    panel = client.post(
        "/jobs/estimate",
        data={
            "model_id": setup["model"],
            "dataset_version_id": version["id"],
            "method": "dpo",
            "learning_rate": "0.0002",
        },
    ).text
    assert 'data-warning="learning_rate"' in panel
    unknown = client.get(f"/jobs/new?version={uuid.uuid4()}")
    assert unknown.status_code == 404


def test_another_users_job_is_404(client: Any, setup: dict[str, Any]) -> None:
    job = client.post(
        "/api/v1/jobs",
        json={"model_id": setup["model"], "dataset_version_id": setup["version"], "spec": {"max_steps": 2}},
    ).json()
    client.post("/api/v1/users", json={"email": "eve@example.com", "password": "eve-password-1"})
    client.post("/logout", data={"csrf_token": client.headers["X-CSRF-Token"]})
    del client.headers["X-CSRF-Token"]
    login(client, "eve@example.com", "eve-password-1")
    client.headers["X-CSRF-Token"] = csrf_of(client, "/models")
    for method, url in [
        ("get", f"/api/v1/jobs/{job['id']}"),
        ("get", f"/api/v1/jobs/{job['id']}/metrics"),
        ("get", f"/api/v1/jobs/{job['id']}/events"),
        ("post", f"/api/v1/jobs/{job['id']}/cancel"),
        ("get", f"/api/v1/jobs/{job['id']}/adapter"),
        ("get", f"/jobs/{job['id']}"),
        ("get", f"/jobs/{job['id']}/_live"),
        ("get", f"/jobs/{job['id']}/metrics"),
        ("post", f"/jobs/{job['id']}/cancel"),
        ("get", f"/jobs/{job['id']}/adapter.zip"),
        ("get", f"/jobs/{job['id']}/spec.yaml"),
        ("get", f"/jobs/new?from={job['id']}"),
        ("get", f"/api/v1/jobs/{job['id']}/checkpoints"),
        ("get", f"/jobs/compare?id={job['id']}&id={uuid.uuid4()}"),
    ]:
        assert getattr(client, method)(url).status_code == 404, url
    resumed = client.post(f"/api/v1/jobs/{job['id']}/resume", json={"checkpoint": "checkpoint-2"})
    assert resumed.status_code == 404
    stolen = client.post("/api/v1/jobs", json={"model_id": setup["model"], "dataset_version_id": setup["version"]})
    assert stolen.status_code == 404  # another user's dataset version cannot be trained on
    assert client.get("/api/v1/jobs").json() == []


def test_clone_and_yaml_export_import_of_the_spec(client: Any, setup: dict[str, Any]) -> None:
    spec = {"max_steps": 7, "lora_r": 8, "learning_rate": 0.0003, "use_rslora": True}
    job = client.post(
        "/api/v1/jobs", json={"model_id": setup["model"], "dataset_version_id": setup["version"], "spec": spec}
    ).json()
    exported = client.get(f"/jobs/{job['id']}/spec.yaml")
    assert exported.status_code == 200 and "attachment" in exported.headers["content-disposition"]
    assert "max_steps: 7" in exported.text and "lora_r: 8" in exported.text
    imported = client.post("/jobs/new/import", files={"spec_file": ("spec.yaml", exported.content)})
    assert imported.status_code == 200
    assert 'name="max_steps" value="7"' in imported.text and 'name="lora_r" value="8"' in imported.text
    bad = client.post("/jobs/new/import", files={"spec_file": ("x.yaml", b"lora_r: -3\n")})
    assert bad.status_code == 422 and "lora_r" in bad.text
    unsafe = client.post("/jobs/new/import", files={"spec_file": ("x.yaml", b"!!python/object/apply:os.system [id]")})
    assert unsafe.status_code == 422  # safe YAML only: no object construction
    clone = client.get(f"/jobs/new?from={job['id']}")
    assert clone.status_code == 200 and f'name="cloned_from" value="{job["id"]}"' in clone.text
    assert 'name="max_steps" value="7"' in clone.text
    form = {
        "model_id": setup["model"],
        "dataset_version_id": setup["version"],
        "cloned_from": job["id"],
        "max_steps": "9",
        "lora_r": "8",
        "method": "sft",
        "adapter": "lora",
    }
    launched = client.post("/jobs", data=form, follow_redirects=False)
    assert launched.status_code == 303
    clone_id = launched.headers["location"].rsplit("/", 1)[1]
    cloned = client.get(f"/api/v1/jobs/{clone_id}").json()
    assert cloned["spec"]["max_steps"] == 9 and cloned["spec"]["lora_r"] == 8


def test_a_job_reads_validating_while_its_data_is_checked() -> None:
    from app.db.models import Run, RunStatus
    from app.jobs.service import job_status

    assert job_status(Run(status=RunStatus.running, progress_code="tokenising")) == "validating"
    assert job_status(Run(status=RunStatus.running, progress_code="step_loss")) == "running"
    assert job_status(Run(status=RunStatus.queued)) == "queued"


def test_job_lists_cost_the_same_queries_for_one_job_as_for_five(client: Any, setup: dict[str, Any]) -> None:
    """Lists load what they show beside each job (run, model, dataset version) in the list's own queries;
    the relationships refuse to load one row at a time (lazy='raise'), so a list that forgot would fail."""
    from sqlalchemy import event

    from app.db.session import get_engine

    base = {"model_id": setup["model"], "dataset_version_id": setup["version"], "spec": {"max_steps": 2}}

    def queries(path: str) -> int:
        seen: list[str] = []

        def count(*_args: Any) -> None:
            seen.append("q")

        event.listen(get_engine(), "before_cursor_execute", count)
        try:
            assert client.get(path).status_code == 200
        finally:
            event.remove(get_engine(), "before_cursor_execute", count)
        return len(seen)

    client.post("/api/v1/jobs", json=base)
    one = {path: queries(path) for path in ("/jobs", "/api/v1/jobs", "/v1/fine_tuning/jobs")}
    for _ in range(4):
        client.post("/api/v1/jobs", json=base)
    five = {path: queries(path) for path in one}
    assert five == one
