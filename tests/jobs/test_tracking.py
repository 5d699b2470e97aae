"""Experiment tracking against a real MLflow tracking server (its own package, a SQLite backend, on loopback):
a tiny job logs its spec as params, every step's metrics, its adapter and model card as artifacts, and its
evaluation's numbers, read back with MLflow's own client; TensorBoard event files are written beside the
checkpoints and download as a zip. A server stopped in the middle of a job does not fail the job: the job notes
it and carries on. /v1 integrations take the tracker types."""

from __future__ import annotations

import io
import struct
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import mlflow_service, wait_for
from worker import lifecycle

pytestmark = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)


@pytest.fixture
def mlflow_server(tmp_path: Path) -> Iterator[tuple[str, Any]]:
    with mlflow_service(tmp_path) as found:
        yield found


def _job(client: Any, setup: dict[str, Any], **spec: Any) -> dict[str, Any]:
    spec = {"max_steps": 4, "batch_size": 4, "eval_steps": 0, "save_steps": 2, "max_seq_length": 64, **spec}
    body = {"model_id": setup["model"], "dataset_version_id": setup["version"], "spec": spec, "name": "tracked"}
    job = client.post("/api/v1/jobs", json=body).json()
    assert "run" in job, job
    return dict(job)


def _scalars(archive: bytes) -> dict[str, list[tuple[int, float]]]:
    """The scalars in TensorBoard event files (TFRecord framing: length, its CRC, an Event, its CRC)."""
    from tensorboardX.proto import event_pb2

    found: dict[str, list[tuple[int, float]]] = {}
    with zipfile.ZipFile(io.BytesIO(archive)) as files:
        for name in files.namelist():
            data = files.read(name)
            position = 0
            while position < len(data):
                (length,) = struct.unpack("<Q", data[position : position + 8])
                record = data[position + 12 : position + 12 + length]
                position += 12 + length + 4
                event = event_pb2.Event.FromString(record)
                for value in event.summary.value:
                    if value.HasField("simple_value"):
                        found.setdefault(value.tag, []).append((event.step, value.simple_value))
    return found


def test_a_job_logs_to_mlflow_and_tensorboard(
    client: Any, setup: dict[str, Any], configure: Any, mlflow_server: tuple[str, Any]
) -> None:
    from mlflow.tracking import MlflowClient

    uri, _proc = mlflow_server
    configure(mlflow_tracking_uri=uri, public_url="https://refinery.example.com")
    job = _job(client, setup, mlflow_experiment="tiny experiments")
    lifecycle.execute(job["run"]["id"])
    assert client.get(f"/api/v1/jobs/{job['id']}").json()["status"] == "succeeded"
    [evaluation] = client.get("/api/v1/evaluations").json()
    lifecycle.execute(evaluation["run"]["id"])

    mlflow = MlflowClient(tracking_uri=uri)
    experiment = mlflow.get_experiment_by_name("tiny experiments")
    assert experiment is not None
    [run] = mlflow.search_runs([experiment.experiment_id])
    assert run.info.status == "FINISHED" and run.info.run_name == "tracked"
    assert run.data.tags["refinery.job_url"] == f"https://refinery.example.com/jobs/{job['id']}"
    params = run.data.params
    assert params["max_steps"] == "4" and params["method"] == "sft" and params["base_model"] == "tiny"
    assert params["dataset_version"] == "1" and float(params["learning_rate"]) > 0
    losses = mlflow.get_metric_history(run.info.run_id, "loss")
    assert [m.step for m in losses] == [1, 2, 3, 4] and all(m.value > 0 for m in losses)
    assert mlflow.get_metric_history(run.info.run_id, "learning_rate")
    evaluated = {k for k in run.data.metrics if k.startswith("eval.")}
    assert {"eval.tuned.exact_match", "eval.base.exact_match"} <= evaluated
    artifacts = {a.path for a in mlflow.list_artifacts(run.info.run_id)}
    assert {"README.md", "adapter"} <= artifacts
    adapter = {a.path for a in mlflow.list_artifacts(run.info.run_id, "adapter")}
    assert {"adapter/adapter_model.safetensors", "adapter/adapter_config.json"} <= adapter
    card = Path(mlflow.download_artifacts(run.info.run_id, "README.md", str(Path(setup["model_dir"]).parent)))
    assert "tracked" in card.read_text()

    # the job page links to the run; TensorBoard's events download and hold every step's loss
    page = client.get(f"/jobs/{job['id']}").text
    assert f"#/experiments/{experiment.experiment_id}/runs/{run.info.run_id}" in page
    events = client.get(f"/api/v1/jobs/{job['id']}/tensorboard")
    assert events.status_code == 200 and events.headers["content-type"] == "application/zip"
    scalars = _scalars(events.content)
    assert [step for step, _value in scalars["train/loss"]] == [1, 2, 3, 4]
    assert [round(v, 4) for _s, v in scalars["train/loss"]] == [round(m.value, 4) for m in losses]
    assert client.get(f"/jobs/{job['id']}/tensorboard.zip").content[:2] == b"PK"
    picture_in_mlflow(f"{uri}/#/experiments/{experiment.experiment_id}/runs/{run.info.run_id}/model-metrics")


def picture_in_mlflow(url: str) -> None:
    """README's picture of a run in MLflow's own pages, when .ci/screenshots asks for pictures (Chromium)."""
    from tests.e2e.conftest import CHROMIUM, CHROMIUM_ARGS, SCREENSHOTS

    if SCREENSHOTS is None:
        return
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(url)
        page.wait_for_selector("text=tracked", timeout=120_000)  # the run's name: MLflow's page has loaded
        page.wait_for_timeout(5_000)  # its charts draw after the page
        assistant = page.locator("button[aria-label=Close]")
        if assistant.count():  # MLflow's chat side panel, not part of the run
            assistant.first.click()
        page.screenshot(path=str(SCREENSHOTS / "18-mlflow-run.png"), full_page=True)
        browser.close()


def test_a_tracker_that_stops_answering_never_fails_the_job(
    client: Any, setup: dict[str, Any], configure: Any, mlflow_server: tuple[str, Any], tmp_path: Path, monkeypatch: Any
) -> None:
    from mlflow.tracking import MlflowClient

    from tests.conftest import stop_process

    uri, proc = mlflow_server
    release = tmp_path / "release"
    monkeypatch.setenv("REFINERY_FAILPOINTS", "wait_at_step=2")
    monkeypatch.setenv("REFINERY_FAILPOINTS_RELEASE", str(release))
    configure(mlflow_tracking_uri=uri)
    job = _job(client, setup)
    worker = threading.Thread(target=lifecycle.execute, args=(job["run"]["id"],), daemon=True)
    worker.start()
    mlflow = MlflowClient(tracking_uri=uri)

    def first_step_logged() -> bool:
        runs = mlflow.search_runs([e.experiment_id for e in mlflow.search_experiments()])
        return bool(runs) and bool(mlflow.get_metric_history(runs[0].info.run_id, "loss"))

    wait_for(first_step_logged, timeout=120, what="the job's first step in MLflow")
    stop_process(proc)  # the tracking server goes away in the middle of the job
    release.touch()
    worker.join(timeout=300)
    assert not worker.is_alive()
    detail = client.get(f"/api/v1/jobs/{job['id']}").json()
    assert detail["status"] == "succeeded", detail["run"]
    events = client.get(f"/api/v1/runs/{job['run']['id']}/events").json()
    down = [e for e in events if e["code"] == "tracker_down"]
    assert down and "MLflow stopped answering" in down[0]["message"] and "the job goes on" in down[0]["message"]
    scalars = _scalars(client.get(f"/api/v1/jobs/{job['id']}/tensorboard").content)
    assert [step for step, _value in scalars["train/loss"]] == [1, 2, 3, 4]  # TensorBoard kept every step


def test_v1_integrations_take_refinerys_trackers(client: Any, setup: dict[str, Any]) -> None:
    import openai

    key = client.post("/api/v1/keys", json={"name": "sdk"}).json()["key"]
    sdk = openai.OpenAI(base_url="http://testserver/v1", api_key=key, http_client=client, max_retries=0)
    dataset = client.get("/api/v1/datasets").json()[0]
    created = sdk.fine_tuning.jobs.create(
        model="tiny",
        training_file="file-" + dataset["id"].replace("-", ""),
        integrations=[{"type": "mlflow", "mlflow": {"experiment": "support-bot"}}, {"type": "tensorboard"}],
    )
    assert [i.type for i in created.integrations or []] == ["tensorboard", "mlflow"]
    spec = client.get(f"/api/v1/jobs/{created.id.removeprefix('ftjob-')}").json()["spec"]
    assert spec["mlflow_experiment"] == "support-bot" and spec["mlflow_tracking_uri"] == ""
    with pytest.raises(openai.BadRequestError) as refused:
        sdk.fine_tuning.jobs.create(
            model="tiny",
            training_file=created.training_file,
            integrations=[{"type": "mlflow", "mlflow": {"tracking_uri": "file:///etc"}}],
        )
    assert "mlflow_tracking_uri" in str(refused.value.param or refused.value.message)
    with pytest.raises(openai.BadRequestError) as private:  # a user-given tracker is checked like a judge's URL
        sdk.fine_tuning.jobs.create(
            model="tiny",
            training_file=created.training_file,
            integrations=[{"type": "mlflow", "mlflow": {"tracking_uri": "http://127.0.0.1:5000"}}],
        )
    assert private.value.param == "mlflow_tracking_uri" and "loopback" in private.value.message
