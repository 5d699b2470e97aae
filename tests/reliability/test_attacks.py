"""Attacks beyond IDOR and traversal: CSRF in its cross-site shapes, SSRF through the model source, shell
injection through names that reach the training child, and the install's secrets."""

from __future__ import annotations

import http.server
import stat
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import MetaData, String, Text, select

from tests.conftest import csrf_of, free_port, make_admin
from worker import lifecycle


def test_cross_site_shapes_of_a_state_change_are_refused(client: Any) -> None:
    """What a page on another origin (another loopback port is another origin) can send with the user's
    cookie: a form, a text/plain body dressed as JSON, a multipart body; with or without a stolen token."""
    make_admin(client)
    token = csrf_of(client, "/settings/keys")
    other = f"http://127.0.0.1:{free_port()}"
    attempts = [
        # no token at all: what a cross-site form can send
        ("/settings/keys", {"data": {"name": "form"}}),
        ("/api/v1/keys", {"content": b'{"name": "plain"}', "headers": {"Content-Type": "text/plain"}}),
        ("/settings/keys", {"files": {"name": (None, b"multipart")}}),
        # the right token, from the wrong origin
        ("/settings/keys", {"data": {"name": "x", "csrf_token": token}, "headers": {"Origin": other}}),
        ("/settings/keys", {"data": {"name": "x", "csrf_token": token}, "headers": {"Origin": "null"}}),
        ("/api/v1/keys", {"json": {"name": "x"}, "headers": {"X-CSRF-Token": token, "Origin": other}}),
        ("/api/v1/keys", {"json": {"name": "x"}, "headers": {"X-CSRF-Token": token, "Origin": "null"}}),
        (
            "/settings/keys",
            {"files": {"name": (None, b"x"), "csrf_token": (None, token.encode())}, "headers": {"Origin": other}},
        ),
    ]
    for path, kwargs in attempts:
        response = client.post(path, **kwargs)
        assert response.status_code == 403, (path, kwargs, response.status_code)
    # a JSON route does not take text/plain even with the token (a form can send text/plain)
    plain = client.post(
        "/api/v1/keys", content=b'{"name": "plain"}', headers={"Content-Type": "text/plain", "X-CSRF-Token": token}
    )
    assert plain.status_code in (415, 422), plain.text
    assert client.get("/api/v1/keys").json() == []
    # the same requests from the page's own origin work
    assert client.post("/settings/keys", data={"name": "ok", "csrf_token": token}).status_code == 200
    assert [k["name"] for k in client.get("/api/v1/keys").json()] == ["ok"]


class _Listener(http.server.BaseHTTPRequestHandler):
    hits: list[str]
    redirect_to = ""

    def _answer(self) -> None:
        self.hits.append(self.path)
        if self.redirect_to:
            self.send_response(302)
            self.send_header("Location", self.redirect_to + self.path)
        else:
            self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_GET = do_HEAD = do_POST = _answer

    def log_message(self, *args: Any) -> None:
        pass


def _listen(redirect_to: str = "") -> tuple[http.server.ThreadingHTTPServer, list[str]]:
    hits: list[str] = []
    handler = type("Handler", (_Listener,), {"hits": hits, "redirect_to": redirect_to})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, hits


@pytest.fixture
def listeners() -> Iterator[dict[str, Any]]:
    target, target_hits = _listen()
    target_url = f"http://127.0.0.1:{target.server_address[1]}"
    hub, hub_hits = _listen(redirect_to=target_url)  # a hub that redirects everything to the target
    try:
        hub_url = f"http://127.0.0.1:{hub.server_address[1]}"
        yield {"target": target_url, "target_hits": target_hits, "hub": hub_url, "hub_hits": hub_hits}
    finally:
        target.shutdown()
        hub.shutdown()


def test_model_sources_are_hub_ids_and_no_request_reaches_a_local_address(
    client: Any, configure: Any, env: Any, listeners: dict[str, Any]
) -> None:
    """Models come from repo ids and revisions at the hub the administrator configured, never from a URL a
    user types; and the hub's redirects are not followed to a local address."""
    configure(hub_endpoint=listeners["hub"])
    make_admin(client)
    client.headers["X-CSRF-Token"] = csrf_of(client, "/models")
    target = listeners["target"]
    host = target.removeprefix("http://")
    for repo_id, revision in [
        (f"{target}/org/model", "main"),
        (f"{host}/org/model", "main"),
        ("//127.0.0.1/org", "main"),
        ("org/model@127.0.0.1", "main"),
        ("org/model", f"{target}/x"),
        ("org/model", "../../../etc"),
        ("file:///etc/passwd", "main"),
    ]:
        refused = client.post("/api/v1/models/hub", json={"repo_id": repo_id, "revision": revision})
        assert refused.status_code == 422, (repo_id, revision, refused.text)
        assert refused.json()["error"]["field"] in ("repo_id", "revision")
    # a well-formed id: the reachability check asks the hub and does not follow its redirect
    assert listeners["hub_hits"] == []  # the refused ids did not even reach the hub
    client.post("/api/v1/models/hub", json={"repo_id": "org/model", "revision": "main"})
    assert listeners["hub_hits"] and listeners["target_hits"] == []


def test_names_with_shell_syntax_reach_the_training_child_as_plain_text(
    client: Any, setup: dict[str, Any], tmp_path: Path
) -> None:
    marker = Path("/tmp") / f"rf-{uuid.uuid4().hex[:8]}"  # short: a job name has at most 200 characters
    name = f'x; touch {marker} && $(touch {marker}) `touch {marker}` | touch {marker} "'
    spec = {"max_steps": 1, "batch_size": 2, "eval_steps": 0, "save_steps": 1, "max_seq_length": 64}
    body = {"model_id": setup["model"], "dataset_version_id": setup["version"], "spec": spec, "name": name}
    job = client.post("/api/v1/jobs", json=body).json()
    assert "run" in job, job
    lifecycle.execute(job["run"]["id"])
    done = client.get(f"/api/v1/jobs/{job['id']}").json()
    assert done["status"] == "succeeded" and done["name"] == name
    assert not marker.exists()
    marker.unlink(missing_ok=True)


def test_the_install_secret_is_private_and_api_keys_are_stored_hashed(client: Any, env: Any) -> None:
    make_admin(client)
    secret_file = env.data_dir / "secret_key"
    assert secret_file.is_file() and stat.S_IMODE(secret_file.stat().st_mode) == 0o600
    assert len(secret_file.read_text().strip()) >= 32
    token = csrf_of(client, "/settings/keys")
    key = client.post("/api/v1/keys", json={"name": "k"}, headers={"X-CSRF-Token": token}).json()["key"]
    from app.db.session import get_engine

    engine = get_engine()
    meta = MetaData()
    meta.reflect(engine)
    with engine.connect() as conn:
        for table in meta.sorted_tables:
            text_columns = [c for c in table.columns if isinstance(c.type, (String, Text))]
            for row in conn.execute(select(*text_columns)).all() if text_columns else []:
                assert not any(isinstance(v, str) and key in v for v in row), table.name
    # the key works, so what is stored is a hash of it
    assert client.get("/api/v1/me", headers={"Authorization": f"Bearer {key}"}).status_code == 200
