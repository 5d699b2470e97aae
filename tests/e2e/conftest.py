"""Browser tests: Playwright drives Debian's Chromium against a real `refinery up` on loopback."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import REQUIRE_SERVICES, ROOT, free_port, stop_process, wait_for

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# README's screenshots are written only when asked for (.ci/screenshots sets this); a test run leaves the tree alone
SCREENSHOTS = Path(os.environ["REFINERY_SCREENSHOTS"]) if os.environ.get("REFINERY_SCREENSHOTS") else None
LIVE: dict[str, Any] = {}  # the live server's data directory and environment, for tests that reuse them
ADMIN, PASSWORD = "admin@example.com", "correct-horse-1"


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        if REQUIRE_SERVICES:
            pytest.fail("Debian's chromium is not installed; .ci/run installs it")
        pytest.skip("chromium is not installed")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield instance
        instance.close()


@pytest.fixture(scope="session")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`refinery up` on the embedded default (SQLite, filesystem broker) with a fresh data directory."""
    data = tmp_path_factory.mktemp("refinery-live")
    LIVE["data"] = data
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("REFINERY_")}
    env.update({"REFINERY_DATA_DIR": str(data), "REFINERY_PORT": str(port), "REFINERY_HUB_ENDPOINT": ""})
    # the evaluation after the walkthrough's training answers 4 prompts (CPU minutes matter in CI)
    env.update({"REFINERY_EVAL_SAMPLE_SIZE": "4", "REFINERY_EVAL_MAX_NEW_TOKENS": "24"})
    env.update({"REFINERY_EVAL_LOSS_RECORDS": "16", "REFINERY_EVAL_PROBE_SIZE": "8"})
    env["REFINERY_INFERENCE_PORT"] = str(free_port())
    env["REFINERY_OUTBOUND_ALLOW_HOSTS"] = "127.0.0.1"  # the stand-in judge of test_05 listens on loopback
    LIVE["env"] = env
    refinery = shutil.which("refinery", path=str(Path(sys.executable).parent)) or "refinery"
    log = (data / "up.log").open("wb")
    proc = subprocess.Popen(
        [refinery, "up"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    base = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        try:
            return httpx.get(f"{base}/healthz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_for(lambda: healthy() or proc.poll() is not None, timeout=120, interval=0.5, what="refinery up")
        assert proc.poll() is None, (data / "up.log").read_text()[-4000:]
        # the first command prints the URL once everything is ready
        wait_for(
            lambda: f"Refinery is running at {base}/" in (data / "up.log").read_text(),
            timeout=20,
            what="the URL printed by refinery up",
        )
        yield base
    finally:
        stop_process(proc, timeout=30)
        print((data / "up.log").read_text()[-4000:])


def upload_dataset(page: Any, live_server: str, path: Path, name: str = "") -> None:
    """Upload a file from the Datasets page and land on its dataset page."""
    page.goto(live_server + "/datasets")
    page.set_input_files("#upload-file", str(path))
    if name:
        page.fill("input[name=name]", name)
    page.click("#upload-form button[type=submit]")
    page.wait_for_url("**/datasets/*")


def shot(page: Any, name: str) -> None:
    if SCREENSHOTS is None:
        return
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


# User data (records, excerpts, templates, names) is not interface text: the language check leaves it out.
_INTERFACE_TEXT = """() => { const body = document.body.cloneNode(true);
    // options name JSON fields (prompt, chosen, ...) that stay as they are in every language
    const data = 'pre, code, option, .records, #issues td, .tokens, [data-dataset] td:first-child, h1, .whoami';
    body.querySelectorAll(data).forEach((el) => el.remove());
    return body.innerText; }"""


def english_only_messages() -> list[str]:
    """Catalogue messages whose English text would betray an untranslated string on a Chinese page."""
    from babel.messages.pofile import read_po

    with (ROOT / "app" / "i18n" / "zh_Hans" / "LC_MESSAGES" / "messages.po").open("rb") as handle:
        catalog = read_po(handle, locale="zh_Hans")
    return [m.id for m in catalog if isinstance(m.id, str) and m.id and m.string != m.id and "%(" not in m.id]


def untranslated(page: Any, english: list[str]) -> list[str]:
    import re

    text = page.evaluate(_INTERFACE_TEXT)
    # identifiers such as 'all-linear' are not words of the interface: hyphens join them
    return [m for m in english if re.search(rf"(?<![\w@-]){re.escape(m)}(?![\w@-])", text)]


def logged_in_page(browser: Any, live_server: str, *, locale: str = "en") -> Any:
    """A page logged in as the admin (created first when this module runs alone), in ``locale``, with the
    bundled model ready. The language is remembered per user, so it is set explicitly."""
    browser_locale = "zh-CN" if locale == "zh_Hans" else "en-US"
    context = browser.new_context(viewport={"width": 1280, "height": 900}, locale=browser_locale)
    page = context.new_page()
    page.goto(live_server + "/login")
    if page.url.endswith("/setup"):
        page.fill("input[name=password_again]", PASSWORD)
    page.fill("input[name=email]", ADMIN)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url("**/models")
    if page.locator("#locale-select").input_value() != locale:
        with page.expect_navigation():
            page.select_option("#locale-select", locale)
    page.wait_for_selector("tr[data-model='SmolLM2-135M-Instruct'][data-status=ready]", timeout=300_000)
    return page


# ---- what a test needs, made when no earlier test left it behind ------------------------------------------
# Each browser test sets up what it uses: in file order the walkthrough's own steps leave these behind and
# the helpers below only find them; a test run alone (or in another order) makes them here first.

ALPACA = "Alpaca 5000"
QUICK_JOB = "SmolLM2 quick LoRA"


def _api(page: Any) -> tuple[Any, dict[str, str]]:
    token = str(page.locator("input[name=csrf_token]").first.get_attribute("value"))
    return page.request, {"X-CSRF-Token": token}


def ensure_alpaca(browser: Any, live_server: str) -> str:
    """The id of an imported version of the Alpaca 5000 upload (test_02_datasets uploads it in the browser)."""
    page = logged_in_page(browser, live_server)
    try:
        api, headers = _api(page)

        def imported() -> str | None:
            for dataset in api.get(f"{live_server}/api/v1/datasets").json():
                if dataset["name"] == ALPACA and dataset["versions"]:
                    return str(dataset["versions"][-1]["id"])
            return None

        found = imported()
        if found:
            return found
        from tests.conftest import SHARED_DATASETS

        path = SHARED_DATASETS / "alpaca_5000.json"
        made = api.post(
            f"{live_server}/api/v1/datasets",
            multipart={
                "file": {"name": path.name, "mimeType": "application/json", "buffer": path.read_bytes()},
                "name": ALPACA,
            },
            headers=headers,
        )
        assert made.ok, made.text()
        dataset_id = made.json()["id"]

        def validated() -> bool:
            status = api.get(f"{live_server}/api/v1/datasets/{dataset_id}").json()["status"]
            assert status != "failed", status
            return status != "validating"

        wait_for(validated, timeout=180, interval=2, what="Alpaca 5000 to validate")
        if api.get(f"{live_server}/api/v1/datasets/{dataset_id}").json()["status"] == "needs_review":
            assert api.post(f"{live_server}/api/v1/datasets/{dataset_id}/import", headers=headers).ok
        return str(wait_for(imported, timeout=60, interval=2, what="Alpaca 5000 to be imported"))
    finally:
        page.context.close()


def launch_quick_job(page: Any, live_server: str) -> None:
    """The walkthrough's short job from the job form (the CPU quick-LoRA preset, 4 steps), up to its page."""
    page.goto(live_server + "/jobs/new?preset=cpu-quick-lora")
    option = page.locator("select[name=dataset_version_id] option", has_text=ALPACA).first
    page.select_option("select[name=dataset_version_id]", value=option.get_attribute("value"))
    assert page.input_value("input[name=max_steps]") == "30"  # the preset filled the form
    page.fill("input[name=name]", QUICK_JOB)
    page.fill("input[name=max_steps]", "4")
    page.fill("input[name=batch_size]", "2")
    page.fill("input[name=max_seq_length]", "128")
    page.click("summary:has-text('Advanced')")
    page.fill("input[name=eval_steps]", "4")
    page.fill("input[name=save_steps]", "2")
    page.fill("input[name=max_eval_records]", "24")
    page.click("button:has-text('Launch')")
    page.wait_for_url("**/jobs/*")


def _quick_jobs(api: Any, live_server: str) -> list[dict[str, Any]]:
    return [j for j in api.get(f"{live_server}/api/v1/jobs").json() if j["name"] == QUICK_JOB]


def ensure_quick_adapter(browser: Any, live_server: str) -> str:
    """The id of the walkthrough's short job once it has succeeded (test_03_training launches it)."""
    ensure_alpaca(browser, live_server)
    page = logged_in_page(browser, live_server)
    try:
        api, _headers = _api(page)
        if not _quick_jobs(api, live_server):
            launch_quick_job(page, live_server)

        def succeeded() -> str | None:
            for job in _quick_jobs(api, live_server):
                status = job["run"]["status"] if job.get("run") else None
                assert status not in ("failed", "cancelled"), job
                if status == "succeeded":
                    return str(job["id"])
            return None

        return str(wait_for(succeeded, timeout=900, interval=2, what="the short job to succeed"))
    finally:
        page.context.close()


def ensure_evaluation(browser: Any, live_server: str) -> str:
    """The id of a finished evaluation (the short job's own, started when it succeeded)."""
    ensure_quick_adapter(browser, live_server)
    page = logged_in_page(browser, live_server)
    try:
        api, _headers = _api(page)

        def finished() -> str | None:
            done = [e for e in api.get(f"{live_server}/api/v1/evaluations").json() if e["summary"]]
            return str(done[0]["id"]) if done else None

        return str(wait_for(finished, timeout=900, interval=2, what="the short job's evaluation to finish"))
    finally:
        page.context.close()
