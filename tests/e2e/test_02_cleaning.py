"""Cleaning in the browser: a messy upload cleaned with the default recipe, the near-duplicate cluster opened,
one record restored (htmx), the result committed as a new version."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from app.cleaning.recipe import DEFAULT_RECIPE
from tests.cleaning.test_flow import MESSY
from tests.e2e.conftest import logged_in_page, shot, upload_dataset

pytestmark = pytest.mark.e2e


def test_clean_review_restore_and_commit(browser: Any, live_server: str, tmp_path: Path) -> None:
    page = logged_in_page(browser, live_server)
    events: list[str] = []
    page.on("dialog", lambda dialog: (events.append(dialog.message), dialog.dismiss()))
    page.on("pageerror", lambda exc: events.append(str(exc)))

    path = tmp_path / "messy.jsonl"
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in MESSY) + "\n")
    upload_dataset(page, live_server, path, "Messy support chats")
    page.wait_for_selector("#cleaning", timeout=120_000)
    page.click("#cleaning >> text=Clean v1")

    page.wait_for_selector("#builder .step")
    assert page.locator("#builder .step").count() == len(DEFAULT_RECIPE)
    page.select_option("select[name=add_op]", "rules")
    page.click("button[value=add]")
    page.wait_for_selector("#builder .step[data-op=rules]")  # the form redrawn by htmx
    assert page.locator("#builder .step").count() == len(DEFAULT_RECIPE) + 1
    page.click("#builder .step[data-op=rules] >> text=Remove")
    page.wait_for_selector("#builder .step[data-op=rules]", state="detached")
    assert page.locator("#builder .step").count() == len(DEFAULT_RECIPE)
    shot(page, "06a-clean-recipe")
    page.click("button[value=run]")

    page.wait_for_url("**/cleanings/*")
    page.wait_for_selector("#per-step", timeout=120_000)  # the progress bar, then the page reloads itself
    counts = page.locator("#summary .metrics").inner_text()
    assert "10" in counts and "6" in counts  # 10 records, 6 kept
    shot(page, "06b-clean-review")

    page.click("[data-op=near_dedup] a[data-cluster]")
    page.wait_for_selector(".badge >> text=cluster of 1")
    cluster = page.locator("#decisions article[data-record]")
    assert sorted(cluster.evaluate_all("els => els.map(e => e.dataset.record)")) == ["2", "3"]
    near = page.locator("#decisions article[data-op=near_dedup]")
    assert "known for" in near.locator(".side-by-side > div").nth(0).inner_text()
    assert "famous for" in near.locator(".side-by-side > div").nth(1).inner_text()
    near.locator("button[value=keep]").click()
    page.wait_for_selector("#decisions article[data-record='3'][data-override=keep]")
    assert "1 restored" in page.locator("#override-counts").inner_text()
    shot(page, "06c-clean-cluster")

    page.click("#commit-card button[type=submit]")
    # a background run writes the version; its progress shows, then the page reloads with the result
    page.wait_for_selector("#commit-card .notice >> text=Committed as v2", timeout=120_000)
    assert page.locator("#decisions form.override").count() == 0  # committed: nothing left to override
    page.click("#commit-card a >> text=See the version")
    row = page.locator("#versions tr[data-version='2']")
    assert "cleaning of v1" in row.inner_text() and "7" in row.inner_text()  # 6 kept + the one restored
    assert events == []
