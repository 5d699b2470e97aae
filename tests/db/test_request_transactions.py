"""A request's transaction ends as its handler returns, in the handler's own thread (app/core/deps.py:
end_transactions_in_handlers). The wrapping relies on FastAPI building its included routes from the endpoint
at the first request; this test fails if a FastAPI upgrade dispatches to the unwrapped handler again."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from app.core import deps
from tests.conftest import csrf_of, make_admin


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_sync_and_async_handlers_end_their_transaction_where_they_ran(
    client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_admin(client)
    client.headers["X-CSRF-Token"] = csrf_of(client, "/datasets")
    ended: list[tuple[bool, str]] = []
    original = deps._end
    monkeypatch.setattr(
        deps, "_end", lambda s, ok: (ended.append((ok, threading.current_thread().name)), original(s, ok))
    )
    assert client.get("/datasets").status_code == 200  # a sync handler: ends in its worker thread
    assert client.post("/api/v1/datasets", files={"file": ("a.jsonl", b'{"text": "a b"}\n')}).status_code == 202
    bad = client.post("/api/v1/datasets", files={"file": ("a.jsonl", b"x")}, data={"seed": "x"})
    assert bad.status_code == 422  # refused by the async handler: rolled back there
    assert [ok for ok, _ in ended] == [True, True, False], ended
    sync_thread, async_thread = ended[0][1], ended[1][1]
    assert sync_thread != async_thread  # the sync handler's thread is not the event loop's
