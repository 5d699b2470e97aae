"""Training in the browser on the real SmolLM2: launch from the form, watch the chart grow, cancel; then a
short job that finishes, whose adapter zip is downloaded and loads with plain peft outside Refinery."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from tests.conftest import wait_for
from tests.e2e.conftest import (
    LIVE,
    english_only_messages,
    ensure_alpaca,
    launch_quick_job,
    logged_in_page,
    shot,
    untranslated,
)

pytestmark = pytest.mark.e2e


def test_launch_watch_and_cancel(browser: Any, live_server: str) -> None:
    ensure_alpaca(browser, live_server)
    page = logged_in_page(browser, live_server)
    page.goto(live_server + "/jobs/new")
    option = page.locator("select[name=dataset_version_id] option", has_text="Alpaca 5000").first
    page.select_option("select[name=dataset_version_id]", value=option.get_attribute("value"))
    page.fill("input[name=max_steps]", "300")
    page.fill("input[name=batch_size]", "2")
    page.fill("input[name=max_seq_length]", "256")
    page.click("summary:has-text('Advanced')")
    page.fill("input[name=eval_steps]", "0")
    page.dispatch_event("input[name=eval_steps]", "change")
    page.wait_for_selector("#estimate [data-fits]", timeout=20_000)
    assert "peak gpu memory" in page.locator("#estimate").inner_text().lower()  # th is upper-cased by CSS
    shot(page, "07-new-training-job")
    page.click("button:has-text('Launch')")
    page.wait_for_url("**/jobs/*")
    job_url = page.url
    # the chart grows while the job trains; the page is never reloaded
    page.wait_for_selector("[data-chart=loss] canvas", timeout=300_000)
    cookies = {c["name"]: c["value"] for c in page.context.cookies()}

    def steps() -> int:
        rows = httpx.get(job_url + "/metrics", cookies=cookies, timeout=10).json()["rows"]
        return len([r for r in rows if r.get("loss") is not None])

    wait_for(lambda: steps() >= 3, timeout=300, interval=1, what="three logged steps")
    shot(page, "08-training-live")
    page.click("button:has-text('Cancel')")
    page.wait_for_selector("[data-status=cancelled]", timeout=120_000)
    logged = steps()
    assert 3 <= logged < 300
    assert "Cancellation requested." in page.locator(".events").inner_text()
    page.reload()
    page.wait_for_selector("[data-chart=loss] canvas", timeout=30_000)  # the curve so far is still there

    # the same pages in Chinese, events and progress texts included
    with page.expect_navigation():
        page.select_option("#locale-select", "zh_Hans")
    english = english_only_messages()
    page.wait_for_selector("[data-chart=loss] canvas", timeout=30_000)
    assert untranslated(page, english) == [] and "已请求取消。" in page.locator(".events").inner_text()
    shot(page, "zh-08-training-job")
    for path in ("/jobs", "/jobs/new"):
        page.goto(live_server + path)
        assert untranslated(page, english) == [], path
    with page.expect_navigation():
        page.select_option("#locale-select", "en")


def test_a_short_job_succeeds_and_its_adapter_loads_with_peft(browser: Any, live_server: str, tmp_path: Any) -> None:
    import zipfile

    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    ensure_alpaca(browser, live_server)
    page = logged_in_page(browser, live_server)
    launch_quick_job(page, live_server)
    page.wait_for_selector("[data-status=succeeded]", timeout=600_000)
    page.wait_for_selector("#checkpoints [data-checkpoint=checkpoint-2]")
    assert page.locator("[data-result=base_eval_loss]").count() == 1
    # a 4-step job's chart runs from step 0 to step 4, not over an axis of 0-100
    page.wait_for_selector("[data-chart=loss][data-x-range]", timeout=30_000)
    assert page.get_attribute("[data-chart=loss]", "data-x-range") == "0,4"
    shot(page, "09-training-succeeded")
    with page.expect_download() as download_info:
        page.click("a:has-text('Download adapter')")
    archive = tmp_path / "adapter.zip"
    download_info.value.save_as(str(archive))
    with zipfile.ZipFile(archive) as zipped:
        assert "adapter_model.safetensors" in zipped.namelist() and "README.md" in zipped.namelist()
        config = json.loads(zipped.read("adapter_config.json"))
        assert config["base_model_name_or_path"] == "HuggingFaceTB/SmolLM2-135M-Instruct"  # not a server path
        assert "de-quantised from the 4-bit GGUF" in zipped.read("README.md").decode()
        zipped.extractall(tmp_path / "adapter")
    base_dir = next((LIVE["data"] / "artifacts" / "models").glob("*/config.json")).parent
    base = AutoModelForCausalLM.from_pretrained(str(base_dir))
    tokenizer = AutoTokenizer.from_pretrained(str(tmp_path / "adapter"))
    tuned = PeftModel.from_pretrained(base, str(tmp_path / "adapter"))
    ids = tokenizer("Give three tips for staying healthy.", return_tensors="pt")
    with torch.no_grad():
        with tuned.disable_adapter():
            before = tuned(**ids).logits
        after = tuned(**ids).logits
    assert not torch.allclose(before, after)  # the downloaded adapter changes the real model's outputs

    # the evaluation started by itself; its report draws base / few-shot / tuned and shows the samples
    page.goto(page.url.split("?")[0])
    page.click("#evaluations a[href^='/evaluations/']")
    page.wait_for_selector("#verdict svg.bars rect[data-variant=tuned]", timeout=900_000)
    assert page.locator("#samples [data-sample]").count() >= 1
    shot(page, "10-evaluation-report")


def test_the_form_follows_the_method(browser: Any, live_server: str) -> None:
    """Choosing a method brings its learning rate unless the user typed one; a learning rate far from the
    method's usual range is flagged beside the field as it is typed."""
    ensure_alpaca(browser, live_server)
    page = logged_in_page(browser, live_server)
    page.goto(live_server + "/jobs/new")
    assert page.input_value("select[name=method]") == "sft"
    page.select_option("select[name=method]", "dpo")
    assert float(page.input_value("input[name=learning_rate]")) == 5e-6  # DPO's, not SFT's 2e-4
    assert page.locator("#lr-warning").is_hidden()
    page.fill("input[name=learning_rate]", "0.01")
    page.press("input[name=learning_rate]", "Tab")
    assert page.locator("#lr-warning").is_visible() and "above what DPO" in page.inner_text("#lr-warning")
    page.wait_for_selector("#estimate [data-warning='learning_rate']", timeout=20_000)  # the server agrees
    page.select_option("select[name=method]", "sft")
    assert page.input_value("input[name=learning_rate]") == "0.01"  # typed by the user: kept
    assert "above what SFT" in page.inner_text("#lr-warning")
    page.fill("input[name=learning_rate]", "0.0002")
    assert page.locator("#lr-warning").is_hidden()
