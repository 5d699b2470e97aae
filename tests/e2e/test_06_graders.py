"""Graders in the browser (Debian's Chromium): start from an example, save one under a (hostile) name, try it
on one sample in the page's box, then tick it when evaluating the short job and read the graded report."""

from __future__ import annotations

from typing import Any

import pytest

from tests.e2e.conftest import ensure_quick_adapter, logged_in_page, shot

pytestmark = pytest.mark.e2e

NAME = '<img src=x onerror="window.__xss=7">answers'


def test_define_try_and_attach_a_grader(browser: Any, live_server: str) -> None:
    job_id = ensure_quick_adapter(browser, live_server)  # the short job (test_03_training), made here if alone
    page = logged_in_page(browser, live_server)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("dialog", lambda dialog: (errors.append(dialog.message), dialog.dismiss()))
    page.goto(live_server + "/evaluations")
    page.click("#grader-form button[data-fill]:has-text('python')")
    assert "def grade(sample, item)" in page.input_value("#grader-spec")  # the example filled the box
    page.fill("#grader-form input[name=name]", NAME)

    # try the grader in the box before saving it: a JSON answer passes, prose fails
    page.fill("#grader-try textarea[name=output_text]", '{"a": 1}')
    page.click("#grader-try button[type=submit]")
    page.wait_for_selector("#grader-try-result [data-try='pass']", timeout=20_000)
    page.fill("#grader-try textarea[name=output_text]", "not json")
    page.click("#grader-try button[type=submit]")
    page.wait_for_selector("#grader-try-result [data-try='fail']", timeout=20_000)
    page.fill("#grader-try textarea[name=item]", "{nope")
    page.click("#grader-try button[type=submit]")
    page.wait_for_selector("#grader-try-result [data-try='error']", timeout=20_000)
    assert "not valid JSON" in page.inner_text("#grader-try-result")
    shot(page, "16-graders")

    page.click("#grader-form button[type=submit]")
    page.wait_for_selector("#grader-list tr[data-grader]")
    assert NAME in page.inner_text("#grader-list")  # the name shown as text
    assert page.evaluate("window.__xss") is None and page.locator("img[src=x]").count() == 0

    # evaluate the short job with it: three prompts, the grader ticked
    page.goto(f"{live_server}/jobs/{job_id}")
    page.locator("#evaluate-graders label", has_text="answers").locator("input").check()
    page.fill("#evaluate-form input[name=sample_size]", "3")
    page.click("#evaluate-form button[type=submit]")
    page.wait_for_url("**/evaluations/*")
    # the report reloads itself when the evaluation finishes
    page.wait_for_selector("#grader-bars", timeout=600_000)
    assert page.locator("#grader-bars rect[data-variant='tuned']").count() == 1
    assert page.inner_text("#verdict").count(NAME) >= 1 and "passes" in page.inner_text("#verdict")
    graded = page.locator("#samples [data-grades] li[data-grade]")
    assert graded.count() >= 3  # each answer carries its grade
    assert page.evaluate("window.__xss") is None and page.locator("img[src=x]").count() == 0
    shot(page, "17-evaluation-graded")
    assert errors == []
