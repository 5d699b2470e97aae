"""Taking the model elsewhere, in the browser (Debian's Chromium): the short job's adapter exported as q8_0 GGUF
from its page, with the Ollama Modelfile shown there; a job logging to a real MLflow server, opened from the
job page in MLflow's own interface."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.conftest import mlflow_service, wait_for
from tests.e2e.conftest import _api, ensure_alpaca, ensure_quick_adapter, logged_in_page, shot

pytestmark = pytest.mark.e2e


def test_export_gguf_from_the_adapter_page(browser: Any, live_server: str) -> None:
    job_id = ensure_quick_adapter(browser, live_server)  # the short job (test_03_training), made here if alone
    page = logged_in_page(browser, live_server)
    page.goto(f"{live_server}/adapters/{job_id}")
    row = page.locator("#gguf tr[data-gguf=q8_0]")
    row.locator("button:has-text('Export')").click()
    page.wait_for_url(f"**/adapters/{job_id}#gguf")
    page.wait_for_selector("#gguf tr[data-gguf=q8_0] a:has-text('Download (.zip)')", timeout=300_000)
    assert "Ready" in row.inner_text()
    page.locator("#gguf tr[data-modelfile=q8_0] summary").click()
    modelfile = page.inner_text("#gguf tr[data-modelfile=q8_0] pre.small")
    assert modelfile.startswith("FROM ./model-q8_0.gguf") and "<|im_start|>assistant" in modelfile
    assert 'PARAMETER stop "<|im_end|>"' in modelfile
    shot(page, "17-gguf-export")
    api, _headers = _api(page)
    archive = api.get(f"{live_server}/adapters/{job_id}/gguf/q8_0/archive.zip")
    assert archive.ok and archive.body()[:2] == b"PK"


def test_a_job_opens_in_mlflow(browser: Any, live_server: str, tmp_path: Path) -> None:
    version = ensure_alpaca(browser, live_server)
    page = logged_in_page(browser, live_server)
    api, headers = _api(page)
    model = next(m for m in api.get(f"{live_server}/api/v1/models").json() if "SmolLM2" in m["name"])
    with mlflow_service(tmp_path) as (uri, _proc):
        spec = {
            "max_steps": 3,
            "batch_size": 2,
            "max_seq_length": 64,
            "max_eval_records": 8,
            "eval_steps": 0,
            "save_steps": 4,
            "mlflow_experiment": "support-bot",
            "mlflow_tracking_uri": uri,  # this job's own server (loopback: listed by the administrator)
        }
        body = {"name": "SmolLM2 in MLflow", "model_id": model["id"], "dataset_version_id": version, "spec": spec}
        made = api.post(f"{live_server}/api/v1/jobs", data=body, headers=headers)
        assert made.ok, made.text()
        job_id = made.json()["id"]

        def finished() -> bool:
            status = api.get(f"{live_server}/api/v1/jobs/{job_id}").json()["status"]
            assert status not in ("failed", "cancelled"), status
            return bool(status == "succeeded")

        wait_for(finished, timeout=600, interval=2, what="the MLflow-tracked job")
        page.goto(f"{live_server}/jobs/{job_id}")
        link = page.locator("#mlflow-link")
        href = str(link.get_attribute("href"))
        assert href.startswith(f"{uri}/#/experiments/") and "/runs/" in href
        assert page.locator("a:has-text('TensorBoard logs')").count() == 1
        page.goto(href + "/model-metrics")  # MLflow's own page of the run: the loss curve, step by step
        page.wait_for_selector("text=SmolLM2 in MLflow", timeout=60_000)
        page.wait_for_selector("text=learning_rate", timeout=60_000)
        assistant = page.locator("button[aria-label=Close]")
        if assistant.count():  # MLflow's chat side panel, not part of the run
            assistant.first.click()
        shot(page, "18-mlflow-run")
