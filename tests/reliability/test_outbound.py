"""Issue 25, finding 6: URLs a user gives (judges' endpoints) cannot reach loopback, private, link-local or
multicast addresses in any spelling, neither when saved nor when the worker sends (a redirect included),
unless an administrator listed the host. A judge on loopback used to receive the worker's post with the judge
key, and its reply appeared in a member's verdicts."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.core.outbound import OutboundRefused, check_url, guarded_client
from tests.conftest import csrf_of, make_admin
from tests.evaluation.fake_judge import FakeJudge
from tests.evaluation.test_judge import judge_job, sample
from worker.evaluation import judge

SPELLINGS = [
    "http://127.0.0.1:{port}/v1",
    "http://2130706433:{port}/v1",  # 127.0.0.1 as one integer
    "http://0177.0.0.1:{port}/v1",  # octal
    "http://0x7f.0.0.1:{port}/v1",  # hexadecimal
    "http://127.1:{port}/v1",  # short form
    "http://localhost:{port}/v1",
    "http://[::1]:{port}/v1",
    "http://[::ffff:127.0.0.1]:{port}/v1",  # IPv4-mapped IPv6
    "http://0.0.0.0:{port}/v1",
    "http://10.0.0.7/v1",
    "http://192.168.1.1/v1",
    "http://172.16.0.1/v1",
    "http://169.254.169.254/latest/meta-data",  # a cloud's metadata service
    "http://[fe80::1]/v1",
    "http://224.0.0.1/v1",  # multicast
    "http://100.64.0.1/v1",  # shared address space
]


@pytest.fixture
def listener() -> Iterator[dict[str, Any]]:
    """A loopback server that records every request it gets (none may arrive) and redirects to ``target``."""
    hits: list[str] = []
    state: dict[str, Any] = {"hits": hits, "target": ""}

    class Handler(http.server.BaseHTTPRequestHandler):
        def _answer(self) -> None:
            hits.append(self.path)
            if state["target"]:
                self.send_response(307)
                self.send_header("Location", state["target"])
                self.end_headers()
                return
            body = json.dumps({"choices": [{"message": {"content": '{"winner": "A", "reason": "LEAKED"}'}}]})
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body.encode())

        do_GET = do_POST = _answer

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    state["port"] = server.server_address[1]
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_judge_url_on_a_local_or_private_address_is_refused_in_every_spelling(
    client: Any, listener: dict[str, Any]
) -> None:
    make_admin(client)
    headers = {"X-CSRF-Token": csrf_of(client, "/settings/judges")}
    for number, spelling in enumerate(SPELLINGS):
        url = spelling.format(port=listener["port"])
        body = {"name": f"j{number}", "url": url, "model": "m", "api_key": "sk-judge"}
        refused = client.post("/api/v1/judges", json=body, headers=headers)
        assert refused.status_code == 422 and refused.json()["error"]["field"] == "url", (url, refused.text)
        assert "REFINERY_OUTBOUND_ALLOW_HOSTS" in refused.json()["error"]["message"]
    assert client.get("/api/v1/judges", headers=headers).json() == []
    assert listener["hits"] == []


def test_the_worker_sends_nothing_to_a_local_judge_and_reports_why(
    tmp_path: Path, listener: dict[str, Any], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A judge saved before the check (or whose name now resolves to loopback) is refused when the worker sends."""
    monkeypatch.setattr(judge, "api_key", lambda job: "sk-judge")
    for spelling in ("http://127.0.0.1:{port}/v1", "http://2130706433:{port}/v1"):
        url = spelling.format(port=listener["port"])
        samples = [sample(f"s{i}", "q", "a", "b") for i in range(2)]
        assert judge.main(judge_job(tmp_path / str(len(listener["hits"])), samples, url, timeout_s=2)) == 1
        error = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["error"]
        assert error["code"] == "judge_unreachable" and "loopback" in error["params"]["detail"], error
    assert listener["hits"] == []  # no request, no key, no reply reached a verdict


def test_an_administrator_lists_a_host_and_redirects_off_it_are_checked(
    listener: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from app.core.config import get_settings

    with FakeJudge() as fake:
        fake_port = int(fake.url.rsplit(":", 1)[1].split("/", 1)[0])
        monkeypatch.setenv("REFINERY_OUTBOUND_ALLOW_HOSTS", f"127.0.0.1:{fake_port}")
        get_settings.cache_clear()
        try:
            check_url(fake.url)  # the listed host:port
            with pytest.raises(OutboundRefused):
                check_url(f"http://127.0.0.1:{listener['port']}/v1")  # the same host on another port is not
            # a listed host that redirects to an unlisted local address: the redirect is refused before it is sent
            listener["target"] = f"http://127.0.0.1:{listener['port']}/elsewhere"
            monkeypatch.setenv("REFINERY_OUTBOUND_ALLOW_HOSTS", f"127.0.0.1:{fake_port},localhost:{listener['port']}")
            get_settings.cache_clear()
            with guarded_client(follow_redirects=True, timeout=5) as client, pytest.raises(OutboundRefused):
                client.get(f"http://localhost:{listener['port']}/start")
            assert listener["hits"] == ["/start"]  # the listed name was asked; the redirect's target never was
            with guarded_client(timeout=5) as client:
                assert client.post(fake.url + "/chat/completions", json={"messages": [{"content": "x"}]}).is_success
        finally:
            get_settings.cache_clear()
    with pytest.raises(httpx.UnsupportedProtocol):
        httpx.get("file:///etc/passwd")  # (httpx itself knows no other scheme; check_url refuses it by name)
    with pytest.raises(OutboundRefused):
        check_url("file:///etc/passwd")
