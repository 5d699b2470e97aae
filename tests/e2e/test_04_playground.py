"""The playground in the browser on the real SmolLM2: the adapter trained in test_03 answers beside the base
model, streamed; a side-by-side pick is saved for the preference dataset."""

from __future__ import annotations

from typing import Any

import pytest

from tests.e2e.conftest import logged_in_page, shot

pytestmark = pytest.mark.e2e


def test_side_by_side_chat_and_a_pick(browser: Any, live_server: str) -> None:
    page = logged_in_page(browser, live_server)
    page.goto(live_server + "/playground")
    adapter = page.locator("#model-a option", has_text="SmolLM2 quick LoRA").first
    page.select_option("#model-a", value=adapter.get_attribute("value"))
    base = page.locator("#model-b option", has_text="SmolLM2").first
    page.select_option("#model-b", value=base.get_attribute("value"))
    page.fill("#max-tokens", "24")
    page.fill("#prompt", "Give one tip for staying healthy. <script>window.pwned = 1</script>")
    page.click("#send")
    page.wait_for_selector("#pick:not([hidden])", timeout=300_000)
    for side in ("a", "b"):
        assert page.locator(f"[data-answer={side}]").inner_text().strip()
    assert page.evaluate("window.pwned") is None  # the prompt is shown as text, never run
    shot(page, "11-playground")
    page.click("#pick button[data-pick=a]")
    page.wait_for_selector("#pick[hidden]")
    page.goto(live_server + "/playground")
    assert "1 side-by-side picks" in page.locator("#preferences").inner_text()
