"""The playground in the browser.

1. On the real SmolLM2 through our inference process: the walkthrough's short job (test_03) answers beside the base
   model, streamed; a side-by-side pick is saved for the preference dataset.
2. Against an external OpenAI-compatible server (as vLLM would be, set by REFINERY_INFERENCE_URL) whose model
   answers with HTML and script: the page shows it as text and runs none of it."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from tests.conftest import free_port, refinery_command, service_process
from tests.e2e.conftest import LIVE, QUICK_JOB, ensure_quick_adapter, logged_in_page, shot

pytestmark = pytest.mark.e2e
HOSTILE = ['<img src=x onerror="window.pwned=1">', " and ", "<script>window.pwned=2</script>", " done"]


def wait_for_answers(page: Any) -> None:
    """Until the send button is back (both answers finished or failed); a failure is shown with its text. The
    answer boxes appear only after the button is disabled, so both together mean the exchange is over."""
    page.wait_for_selector("[data-answer=a]", timeout=10_000, state="attached")
    page.wait_for_function("() => !document.getElementById('send').disabled", timeout=300_000)
    errors = page.locator("[data-answer].error-text").all_inner_texts()
    log = (LIVE["data"] / "up.log").read_text()[-3000:] if "data" in LIVE else ""
    assert not errors, f"{errors}\n--- up.log ---\n{log}"


def test_side_by_side_chat_and_a_pick(browser: Any, live_server: str) -> None:
    ensure_quick_adapter(browser, live_server)  # the short job of test_03_training, made here when run alone
    page = logged_in_page(browser, live_server)
    page.goto(live_server + "/playground")
    adapter = page.locator("#model-a option", has_text=QUICK_JOB).first
    page.select_option("#model-a", value=adapter.get_attribute("value"))
    base = page.locator("#model-b option", has_text="SmolLM2").first
    page.select_option("#model-b", value=base.get_attribute("value"))

    # two tokens cut every answer: each is marked, and none can be thumbed up or picked as the better one
    page.fill("#max-tokens", "2")
    page.fill("#prompt", "Give one tip for staying healthy. <script>window.pwned = 1</script>")
    page.click("#send")
    wait_for_answers(page)
    assert page.evaluate("window.pwned") is None  # the prompt is shown as text, never run
    for side in ("a", "b"):
        assert page.get_attribute(f"[data-answer={side}]", "data-cut") == "true"
        column = page.locator(f"[data-side={side}]")
        assert "Cut off at the max tokens limit." in column.inner_text()
        assert column.locator("button[data-choice=up]").is_disabled()  # thumbs in side by side too
        assert page.locator(f"#pick button[data-pick={side}]").is_disabled()
    # a thumbs down on a cut answer is fine, and the count under the chat follows at once
    page.locator("[data-side=b] button[data-choice=down]").click()
    page.wait_for_function("() => document.querySelector('#preferences [data-count=down]').textContent === '1'")

    page.click("#reset")
    page.fill("#max-tokens", "48")
    page.fill("#temperature", "0")  # greedy: the same short answers every run, never a sampled ramble
    page.fill("#prompt", "Say hello.")
    page.click("#send")
    wait_for_answers(page)
    for side in ("a", "b"):
        assert page.locator(f"[data-answer={side}]").inner_text().strip()
    assert page.locator("#pick").is_visible()
    shot(page, "11-playground")
    choosable = page.locator("#pick button:not([disabled])")
    assert choosable.count() >= 1, "both short answers were cut at 48 tokens"
    choosable.first.click()
    page.wait_for_selector("#pick", state="hidden")
    page.wait_for_function("() => document.querySelector('#preferences [data-count=pairs]').textContent === '1'")
    page.goto(live_server + "/playground")
    assert "1 side-by-side picks" in page.locator("#preferences").inner_text()


class HostileModelServer:
    """An OpenAI-compatible chat server whose answers are HTML and script, streamed in pieces."""

    def __init__(self) -> None:
        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.end_headers()
                for piece in HOSTILE:
                    chunk = {"model": body["model"], "choices": [{"index": 0, "delta": {"content": piece}}]}
                    self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
                self.wfile.write(b"data: [DONE]\n\n")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)


@pytest.fixture
def web_on_external_inference(live_server: str) -> Iterator[str]:
    """A second web process on the live server's database, asking an external inference server."""
    hostile = HostileModelServer()
    port = free_port()
    env = {**LIVE["env"], "REFINERY_PORT": str(port), "REFINERY_INFERENCE_URL": hostile.url}
    base = f"http://127.0.0.1:{port}"
    try:
        with service_process(
            [refinery_command(), "web"],
            env=env,
            log=LIVE["data"] / "web-external.log",
            health_url=f"{base}/healthz",
            what="the second web process",
        ):
            yield base
    finally:
        hostile.close()


def test_model_output_is_shown_as_text(browser: Any, web_on_external_inference: str) -> None:
    page = logged_in_page(browser, web_on_external_inference)
    page.goto(web_on_external_inference + "/playground")
    page.fill("#prompt", "Say something.")
    page.click("#send")
    wait_for_answers(page)
    answer = page.locator("[data-answer=a]")
    assert answer.inner_text() == "".join(HOSTILE)  # streamed pieces, joined, as text
    assert answer.locator("img, script").count() == 0
    assert page.evaluate("window.pwned") is None
