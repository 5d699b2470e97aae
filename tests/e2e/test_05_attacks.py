"""Attacks in the browser (Debian's Chromium): hostile names and records shown as text on every page that
shows them, user files served as attachments, and a cross-site form from another loopback origin refused."""

from __future__ import annotations

import http.server
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import ensure_evaluation, logged_in_page

pytestmark = pytest.mark.e2e

# each payload, were it live, sets window.__xss or logs the user out through htmx
PAYLOADS = [
    '<img src=x onerror="window.__xss=1">',
    "</script><script>window.__xss=2</script>",
    "{{7*7}}",
    "<div hx-get='/logout' hx-trigger='load'>htmx</div>",
    '"><svg onload="window.__xss=3">',
]
NAME = '<img src=x onerror="window.__xss=9">{{7*7}}'


def _token(page: Any) -> str:
    return str(page.locator("input[name=csrf_token]").first.get_attribute("value"))


def _assert_inert(page: Any, url: str) -> None:
    page.wait_for_timeout(300)  # time for an injected onload / hx-trigger='load' to fire, were it live
    assert page.evaluate("window.__xss") is None, url
    assert page.locator("[hx-get='/logout'], img[src=x], svg[onload]").count() == 0, url
    assert "/login" not in page.url, url


def test_hostile_file_names_records_and_job_names_stay_text(browser: Any, live_server: str, tmp_path: Path) -> None:
    page = logged_in_page(browser, live_server)
    errors: list[str] = []
    page.on("dialog", lambda dialog: (errors.append(dialog.message), dialog.dismiss()))
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    rows = [
        {"messages": [{"role": "user", "content": p}, {"role": "assistant", "content": f"ok {p}"}]} for p in PAYLOADS
    ] * 3
    # a file name is user text too: the browser sends whatever the file is called
    path = tmp_path / "data.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    page.goto(live_server + "/datasets")
    page.set_input_files(
        "#upload-file", files=[{"name": f"{NAME}.jsonl", "mimeType": "application/json", "buffer": path.read_bytes()}]
    )
    page.fill("input[name=name]", NAME)
    page.click("#upload-form button[type=submit]")
    page.wait_for_url("**/datasets/*")
    dataset_url = page.url
    page.wait_for_selector("#preview", timeout=120_000)
    assert NAME in page.locator("h1").inner_text()
    _assert_inert(page, dataset_url)

    dataset_id = dataset_url.rstrip("/").rsplit("/", 1)[1]
    token = _token(page)
    api = page.request
    dataset = api.get(f"{live_server}/api/v1/datasets/{dataset_id}").json()
    models = api.get(f"{live_server}/api/v1/models").json()
    body = {"model_id": models[0]["id"], "dataset_version_id": dataset["versions"][0]["id"], "name": NAME}
    body["spec"] = {"max_steps": 1, "max_seq_length": 64}
    job = api.post(
        f"{live_server}/api/v1/jobs",
        data=json.dumps(body),
        headers={"X-CSRF-Token": token, "Content-Type": "application/json"},
    )
    assert job.ok, job.text()
    job_id = job.json()["id"]
    api.post(f"{live_server}/api/v1/jobs/{job_id}/cancel", headers={"X-CSRF-Token": token})

    shown_by_name = ("/datasets", dataset_url, f"/jobs/{job_id}", "/jobs")
    for url in (*shown_by_name, "/adapters", "/playground", f"/datasets/{dataset_id}/clean"):
        page.goto(url if url.startswith("http") else live_server + url)
        _assert_inert(page, url)
        if url in shown_by_name:  # the name is shown as the text it is: no template ran on it
            assert NAME in page.locator("main").inner_text(), url
    assert errors == []


def test_user_files_are_served_as_attachments(browser: Any, live_server: str) -> None:
    page = logged_in_page(browser, live_server)
    api = page.request
    row = {"messages": [{"role": "user", "content": "<b>hi</b>"}, {"role": "assistant", "content": "hello"}]}
    upload = {"file": {"name": "page.html", "mimeType": "text/html", "buffer": (json.dumps(row) + "\n").encode()}}
    made = api.post(f"{live_server}/api/v1/datasets", multipart=upload, headers={"X-CSRF-Token": _token(page)})
    assert made.ok, made.text()
    dataset_url = f"{live_server}/api/v1/datasets/{made.json()['id']}"
    deadline = time.monotonic() + 120
    while not (dataset := api.get(dataset_url).json())["versions"] and time.monotonic() < deadline:
        time.sleep(0.5)
    version = dataset["versions"][0]["id"]
    for url in (
        f"/api/v1/datasets/{dataset['id']}/versions/{version}/download",
        f"/v1/files/file-{dataset['id'].replace('-', '')}/content",
    ):
        response = api.get(live_server + url)
        assert response.ok, (url, response.status)
        headers = response.headers
        assert headers["content-disposition"].startswith("attachment"), url
        assert (
            headers["x-content-type-options"] == "nosniff"
            and "default-src 'self'" in headers["content-security-policy"]
        )


@pytest.fixture
def other_origin() -> Iterator[dict[str, Any]]:
    """Another origin on loopback (another port) serving the attacker's pages."""
    pages: dict[str, str] = {}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = pages.get(self.path, "").encode()
            self.send_response(200 if body else 404)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield {"url": f"http://127.0.0.1:{server.server_address[1]}", "pages": pages}
    finally:
        server.shutdown()


def test_a_cross_site_form_from_another_loopback_origin_is_refused(
    browser: Any, live_server: str, other_origin: dict[str, Any]
) -> None:
    page = logged_in_page(browser, live_server)
    stolen = _token(page)  # even a leaked token does not help a page on another origin
    # (attacker's page, the action it posts to, the form's encoding, its fields)
    forms = [
        ("/form", "/settings/keys", "application/x-www-form-urlencoded", "evil-form", True),
        ("/plain", "/api/v1/keys", "text/plain", "evil-plain", False),
        ("/multipart", "/settings/keys", "multipart/form-data", "evil-multipart", True),
    ]
    for path, action, enctype, name, with_token in forms:
        if enctype == "text/plain":  # a body that reads as JSON: {"name": "evil-plain", "x": "="}
            fields = '<input name=\'{"name": "evil-plain", "x": "\' value=\'"}\'>'
        else:
            fields = f'<input name="name" value="{name}">'
            fields += f'<input name="csrf_token" value="{stolen}">' if with_token else ""
        other_origin["pages"][path] = (
            f'<form id=f method=post action="{live_server}{action}" enctype="{enctype}">{fields}</form>'
            "<script>document.getElementById('f').submit()</script>"
        )
        with page.expect_navigation(url=f"{live_server}{action}") as navigation:
            page.goto(other_origin["url"] + path)
        assert navigation.value.status == 403, (path, navigation.value.status)
    names = [k["name"] for k in page.request.get(f"{live_server}/api/v1/keys").json()]
    assert not [n for n in names if n.startswith("evil")], names


def test_a_judges_verdicts_and_name_stay_text(browser: Any, live_server: str) -> None:
    """A judge is a model we do not own: its reasons (and the name an administrator gave it) are shown on the
    evaluation report as text. Grades the short job's evaluation with a judge that answers with markup."""
    from tests.evaluation.fake_judge import FakeJudge

    page = logged_in_page(browser, live_server)
    errors: list[str] = []
    page.on("dialog", lambda dialog: (errors.append(dialog.message), dialog.dismiss()))
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    api = page.request
    headers = {"X-CSRF-Token": _token(page), "Content-Type": "application/json"}
    evaluation = ensure_evaluation(browser, live_server)  # the short job's, made here when run alone
    reason = PAYLOADS[0] + PAYLOADS[3]
    with FakeJudge(reason=reason) as fake:
        body = {"name": NAME, "kind": "endpoint", "url": fake.url, "model": "judge"}
        judge = api.post(f"{live_server}/api/v1/judges", data=json.dumps(body), headers=headers)
        assert judge.ok, judge.text()
        made = api.post(
            f"{live_server}/api/v1/evaluations/{evaluation}/judgements",
            data=json.dumps({"judge_id": judge.json()["id"]}),
            headers=headers,
        )
        assert made.ok, made.text()
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            runs = [j["run"] for j in api.get(f"{live_server}/api/v1/evaluations/{evaluation}/judgements").json()]
            if runs and all(r["status"] in ("succeeded", "failed", "cancelled") for r in runs):
                break
            time.sleep(1)
        assert [r["status"] for r in runs] == ["succeeded"], runs
        assert fake.calls > 0
    page.goto(f"{live_server}/evaluations/{evaluation}")
    page.wait_for_selector("#samples [data-sample]", timeout=30_000)
    for details in page.locator("#samples details").all()[:3]:
        details.evaluate("d => d.open = true")
    _assert_inert(page, "evaluation report")
    shown = page.locator("main").inner_text()
    assert NAME in shown and PAYLOADS[0] in shown  # the judge's own words, as text
    assert errors == []
