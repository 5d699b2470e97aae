"""Datasets in the browser: upload, the line-numbered report, the decision, statistics, escaping, template view."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import SHARED_DATASETS
from tests.e2e.conftest import english_only_messages, logged_in_page, shot, untranslated, upload_dataset

pytestmark = pytest.mark.e2e

XSS_ROWS = [
    {
        "messages": [
            {"role": "user", "content": "<img src=x onerror=alert('xss')>"},
            {"role": "assistant", "content": "</script><script>alert('xss')</script>{{7*7}}"},
        ]
    },
    {
        "messages": [
            {"role": "user", "content": "<div hx-get='/logout' hx-trigger='load'>htmx</div>"},
            {"role": "assistant", "content": "你好，世界"},
        ]
    },
    {"messages": [{"role": "narrator", "content": "unknown role"}]},
]


def test_upload_report_escaping_and_template_view(browser: Any, live_server: str, tmp_path: Path) -> None:
    page = logged_in_page(browser, live_server)
    events: list[str] = []
    page.on("dialog", lambda dialog: (events.append(dialog.message), dialog.dismiss()))
    page.on("pageerror", lambda exc: events.append(str(exc)))

    path = tmp_path / "payloads.jsonl"
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in XSS_ROWS) + "\n")
    upload_dataset(page, live_server, path)
    page.wait_for_selector("#report", timeout=120_000)
    assert page.locator("#issues tr[data-line='3'] code").first.inner_text() == "unknown_role"
    shot(page, "05-dataset-report")
    page.click("text=Import the 2 valid records")
    page.wait_for_selector("#preview")
    preview = page.locator("#preview").inner_text()
    assert "<img src=x onerror=alert('xss')>" in preview and "{{7*7}}" in preview and "你好，世界" in preview
    assert "49" not in preview
    page.wait_for_timeout(500)  # give an injected hx-trigger='load' the chance to fire, if it were live
    assert page.url.endswith(page.url.split("/")[-1]) and "/login" not in page.url
    assert page.locator("#preview img").count() == 0 and page.locator("#preview [hx-get]").count() == 0
    page.click("[data-record='1'] >> text=What the model sees")
    assert "".join(page.locator(".tok.trained").all_inner_texts()).startswith("</script><script>alert('xss')")
    assert events == []


def test_alpaca_upload_statistics_and_histogram(browser: Any, live_server: str) -> None:
    page = logged_in_page(browser, live_server)
    upload_dataset(page, live_server, SHARED_DATASETS / "alpaca_5000.json", "Alpaca 5000")
    page.wait_for_selector("#report", timeout=120_000)
    assert "Import the 4,998 valid records" in page.content()
    page.click("text=Import the 4,998 valid records")
    page.wait_for_selector(".chart canvas", timeout=20_000)  # the histogram is drawn, not a table
    stats = page.locator(".metrics").nth(1).inner_text()
    assert "4,998" in stats
    shot(page, "06-dataset-statistics")
    page.fill("input[name=q]", "World Bank")
    page.click("#preview button[type=submit]")
    assert "World Bank" in page.locator(".records").inner_text()


def test_dataset_pages_in_chinese_have_no_untranslated_text(browser: Any, live_server: str) -> None:
    page = logged_in_page(browser, live_server, locale="zh_Hans")
    english = english_only_messages()
    page.goto(live_server + "/datasets")
    assert untranslated(page, english) == []
    shot(page, "zh-06-datasets")
    page.click("[data-dataset='Alpaca 5000'] a")
    page.wait_for_selector(".chart canvas")
    assert untranslated(page, english) == [] and "词元长度" in page.content()
    shot(page, "zh-07-dataset-detail")
    page.click("[data-record] >> text=模型看到的内容 >> nth=0")
    assert untranslated(page, english) == []
    page.context.close()
