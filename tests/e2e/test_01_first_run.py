"""A newcomer's first run in a real browser: create the admin, log in, watch SmolLM2 import, use API keys."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.e2e.conftest import ADMIN, PASSWORD, english_only_messages, shot, untranslated

pytestmark = pytest.mark.e2e


def test_first_run_admin_login_and_bundled_model_ready(browser: Any, live_server: str) -> None:
    context = browser.new_context(viewport={"width": 1280, "height": 800}, locale="en-US")
    page = context.new_page()
    console_errors: list[str] = []
    # script errors only: a form answered with 401/422 is logged by Chromium as a failed resource, by design
    page.on("pageerror", lambda exc: console_errors.append(str(exc)))

    page.goto(live_server + "/")
    assert page.url.endswith("/setup")
    assert "there is no default password" in page.content()
    shot(page, "01-first-run-setup")
    page.fill("input[name=email]", ADMIN)
    page.fill("input[name=password]", PASSWORD)
    page.fill("input[name=password_again]", "something-else")
    page.click("button[type=submit]")
    assert page.locator("[role=alert]").inner_text() == "The two passwords differ."
    page.fill("input[name=password]", PASSWORD)
    page.fill("input[name=password_again]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url("**/models")

    page.click("text=Log out")
    page.wait_for_url("**/login")
    page.fill("input[name=email]", ADMIN)
    page.fill("input[name=password]", "wrong-password")
    page.click("button[type=submit]")
    assert "Wrong e-mail address or password" in page.locator("[role=alert]").inner_text()
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url("**/models")

    row = page.locator("tr[data-model='SmolLM2-135M-Instruct']")
    assert row.count() == 1
    if row.get_attribute("data-status") == "importing":
        assert page.locator("tr[data-model='SmolLM2-135M-Instruct'] progress").count() == 1
        shot(page, "02-models-importing")
    # the table refreshes itself through htmx polling; no reload here
    page.wait_for_selector("tr[data-model='SmolLM2-135M-Instruct'][data-status=ready]", timeout=300_000)
    text = row.inner_text()
    assert "LlamaForCausalLM" in text and "134.5M" in text and "8,192" in text and "Apache-2.0" in text
    shot(page, "03-models-ready")
    page.click("text=SmolLM2-135M-Instruct")
    assert "<|im_start|>" in page.locator("pre.code").inner_text()
    assert "De-quantised from the 4-bit GGUF" in page.locator("#bundled-origin").inner_text()
    shot(page, "04-model-detail")

    page.click("nav >> text=API keys")
    page.fill("input[name=name]", "notebook")
    page.click("text=Create key")
    secret = page.locator("#new-key").inner_text().strip()
    assert secret.startswith("rfy_")
    me = httpx.get(f"{live_server}/api/v1/me", headers={"Authorization": f"Bearer {secret}"})
    assert me.status_code == 200 and me.json()["email"] == ADMIN
    page.goto(live_server + "/settings/keys")
    assert secret not in page.content()
    page.click("tr[data-key=notebook] >> text=Revoke")
    page.wait_for_selector("tr[data-key=notebook] >> text=revoked")
    assert httpx.get(f"{live_server}/api/v1/me", headers={"Authorization": f"Bearer {secret}"}).status_code == 401
    assert console_errors == []
    context.close()


def test_every_page_in_chinese_has_no_untranslated_text(browser: Any, live_server: str) -> None:
    """Walks the pages that exist in 简体中文 (after the first-run test created the admin)."""
    context = browser.new_context(
        viewport={"width": 1280, "height": 800},
        locale="zh-CN",
        extra_http_headers={"Accept-Language": "zh-CN,zh;q=0.9"},
    )
    page = context.new_page()
    page.goto(live_server + "/login")
    assert page.locator("html").get_attribute("lang") == "zh-Hans"
    shot(page, "zh-01-login")
    english = english_only_messages()
    assert untranslated(page, english) == []
    page.fill("input[name=email]", ADMIN)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url("**/models")
    page.wait_for_selector("tr[data-model='SmolLM2-135M-Instruct'][data-status=ready]", timeout=300_000)
    for path, name in (
        ("/models", "zh-02-models"),
        ("/settings/keys", "zh-03-api-keys"),
        ("/settings/users", "zh-04-users"),
    ):
        page.goto(live_server + path)
        assert untranslated(page, english) == [], path
        shot(page, name)
    page.goto(live_server + "/models")
    page.click("text=SmolLM2-135M-Instruct")
    assert "对话模板" in page.content() and untranslated(page, english) == []
    shot(page, "zh-05-model-detail")
    # the header switcher changes the language on any page and remembers it for the user
    with page.expect_navigation():
        page.select_option("#locale-select", "en")
    assert "Chat template" in page.content()
    page.goto(live_server + "/settings/keys")
    assert "Create key" in page.content()
    with page.expect_navigation():
        page.select_option("#locale-select", "zh_Hans")
    assert "创建密钥" in page.content()
    context.close()
