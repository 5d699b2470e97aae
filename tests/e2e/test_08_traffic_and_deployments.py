"""The flywheel's pages in the browser (Debian's Chromium), on the real SmolLM2: answers kept with store=true
appear on Traffic, one is marked bad and one corrected by clicking, Make dataset turns them into a dataset, and a
short job is trained on it from its page. A deployment is created from its form, moved to the walkthrough's quick
job (an administrator's override, with its reason) and rolled back, its history on its page; then the adapter
trained on the traffic is put to the gate, whose two evaluations run while the page watches, and the outcome with
its numbers is shown and kept in the history. (The gate's pass and refusal rules are tested on the tiny model in
tests/deployments.)"""

from __future__ import annotations

from typing import Any

import pytest

from tests.e2e.conftest import QUICK_JOB, _api, ensure_alpaca, ensure_quick_adapter, logged_in_page, shot

pytestmark = pytest.mark.e2e


def test_review_traffic_make_a_dataset_and_move_a_deployment(browser: Any, live_server: str) -> None:
    job_id = ensure_quick_adapter(browser, live_server)  # the short job (test_03_training), made here if alone
    ensure_alpaca(browser, live_server)
    page = logged_in_page(browser, live_server)
    api, headers = _api(page)
    base = next(m for m in api.get(f"{live_server}/v1/models").json()["data"] if m["id"].startswith("smollm2"))
    for question in ("Name a colour.", "Say hello.", "<b>What is 2+2?</b>"):
        body = {
            "model": base["id"],
            "messages": [{"role": "user", "content": question}],
            "max_tokens": 12,
            "temperature": 0,
            "store": True,
            "metadata": {"app": "walkthrough"},
        }
        answered = api.post(f"{live_server}/v1/chat/completions", data=body, headers=headers)
        assert answered.ok, answered.text()

    # Traffic: a thumbs down, a correction, then a dataset of what the filter selects
    page.goto(f"{live_server}/traffic?metadata=app%3Dwalkthrough")
    rows = page.locator("#traffic tr[data-completion]")
    assert rows.count() == 3 and "<b>What is 2+2?</b>" in page.inner_text("#traffic")  # shown as text
    rows.nth(0).locator("button[data-choice=bad]").click()
    page.wait_for_selector("#traffic tr[data-rating=bad]")
    row = page.locator("#traffic tr[data-completion]").nth(1)
    row.locator("summary").click()
    row.locator("textarea[name=correction]").fill("Blue.")
    row.locator("button:has-text('Save the corrected answer')").click()
    page.wait_for_selector("#traffic ins[data-correction]")
    shot(page, "19-traffic")
    page.fill("#make-dataset input[name=name]", "Walkthrough traffic")
    page.click("#make-dataset button[type=submit]")
    page.wait_for_url("**/datasets/*")
    assert "made from 2 stored answers" in page.inner_text("#from-traffic")  # the bad one without a fix left out

    # train on it from its page: a short job, launched from the form as a user would
    page.click("#versions a:has-text('Train on it')")
    page.wait_for_url("**/jobs/new?version=*")
    page.fill("input[name=name]", "traffic fix")
    page.fill("input[name=max_steps]", "2")
    page.fill("input[name=batch_size]", "2")
    page.fill("input[name=max_seq_length]", "128")
    page.click("summary:has-text('Advanced')")
    page.fill("input[name=eval_steps]", "0")
    page.click("button:has-text('Launch')")
    page.wait_for_url("**/jobs/*")
    page.wait_for_selector("[data-status=succeeded]", timeout=600_000)

    # Deployments: create one on the base model, move it to the short job's adapter, roll it back
    page.goto(f"{live_server}/deployments")
    page.fill("#new-deployment input[name=name]", "walkthrough-bot")
    page.select_option("#new-deployment select[name=model]", value=base["id"])
    alpaca = page.locator("#new-deployment select[name=dataset_version_id] option", has_text="Alpaca 5000").first
    page.select_option("#new-deployment select[name=dataset_version_id]", value=alpaca.get_attribute("value"))
    page.select_option("#new-deployment select[name=metric]", "rouge_l")
    page.fill("#new-deployment input[name=sample_size]", "3")
    page.click("#new-deployment button[type=submit]")
    page.wait_for_url("**/deployments/*")
    assert "SmolLM2" in page.inner_text("#serves")
    option = page.locator("#promote-form select[name=model] option", has_text=QUICK_JOB).first
    page.select_option("#promote-form select[name=model]", value=option.get_attribute("value"))
    page.fill("#promote-form input[name=override_reason]", "walkthrough: no gate needed")
    page.click("#promote-form button[type=submit]")
    page.wait_for_selector("#history tr[data-action=overridden]")
    assert QUICK_JOB in page.inner_text("#serves")
    page.click("#rollback-form button[type=submit]")
    page.wait_for_selector("#history tr[data-action=rolled_back]")
    assert "SmolLM2" in page.inner_text("#serves")
    assert "walkthrough: no gate needed" in page.inner_text("#history")
    shot(page, "20-deployment")
    page.goto(f"{live_server}/adapters/{job_id}")
    assert "walkthrough-bot" in page.inner_text("#lineage")

    # the gate, for the adapter trained on the traffic: no reason given, so the candidate and the served model are
    # evaluated first
    page.go_back()
    page.wait_for_selector("#promote-form")
    fixed = page.locator("#promote-form select[name=model] option", has_text="traffic fix").first
    page.select_option("#promote-form select[name=model]", value=fixed.get_attribute("value"))
    page.click("#promote-form button[type=submit]")
    page.wait_for_selector("#gate-live [data-promotion=running]")
    outcome = page.wait_for_selector(
        "#gate-live [data-promotion=passed], #gate-live [data-promotion=failed]", timeout=600_000
    )
    assert outcome is not None and "rouge_l: candidate" in outcome.inner_text()  # the gate's metric, both numbers
    action = "promoted" if outcome.get_attribute("data-promotion") == "passed" else "refused"
    page.reload()
    assert page.locator(f"#history tr[data-action={action}]").count() == 1
    shot(page, "21-deployment-gate")
    assert ("traffic fix" in page.inner_text("#serves")) == (action == "promoted")
