"""A request's transaction: plain ``def`` handlers run in worker threads, the session dependency commits as
the handler returns (before the response is sent) and rolls back when it fails; bodies are read by async
dependencies after who-is-asking has ended its reads, so nothing is awaited with a transaction open."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.core.deps import get_db
from tests.conftest import csrf_of, make_admin

# the two handlers that stream a model's answer await it; their reads run in a worker thread and end first
STREAMING = {"chat_completions", "stream"}


def _routes(routes: list[Any]) -> Iterator[Any]:
    for route in routes:
        if hasattr(route, "original_router"):
            yield from _routes(route.original_router.routes)
        else:
            yield route


def _uses_session(dependant: Any) -> bool:
    return any(d.call is get_db or _uses_session(d) for d in dependant.dependencies)


def test_every_handler_with_a_session_is_a_plain_function() -> None:
    from app.main import create_app

    app = create_app()
    checked, awaiting = 0, []
    for route in _routes(app.router.routes):
        dependant = getattr(route, "dependant", None)
        if dependant is None or not _uses_session(dependant):
            continue
        checked += 1
        if inspect.iscoroutinefunction(route.endpoint):
            awaiting.append(route.endpoint.__name__)
    assert checked > 100
    assert set(awaiting) == STREAMING, awaiting
    for name in STREAMING:
        source = inspect.getsource(next(r.endpoint for r in _routes(app.router.routes) if r.name == name))
        assert "end_reads(session)" in source and "run_in_threadpool" in source


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_handler_commits_before_its_answer_and_rolls_back_when_it_fails(
    client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_admin(client)
    client.headers["X-CSRF-Token"] = csrf_of(client, "/datasets")
    on_loop: list[bool] = []
    original = Session.commit

    def commit(self: Session) -> None:
        try:
            asyncio.get_running_loop()
            on_loop.append(True)
        except RuntimeError:  # a worker thread runs no event loop
            on_loop.append(False)
        original(self)

    monkeypatch.setattr(Session, "commit", commit)
    ok = client.post("/api/v1/datasets", files={"file": ("a.jsonl", b'{"text": "a b"}\n')}, data={"name": "kept"})
    assert ok.status_code == 202
    assert on_loop and not any(on_loop)  # every commit ran in a worker thread, none on the event loop
    # the answer came after the commit: a second request sees the dataset at once
    assert [d["name"] for d in client.get("/api/v1/datasets").json()] == ["kept"]

    from app.db.models import Dataset
    from app.db.session import get_sessionmaker

    def count() -> int:
        with get_sessionmaker()() as session:
            return int(session.scalar(select(func.count()).select_from(Dataset)) or 0)

    before = count()
    bad = client.post("/api/v1/datasets", files={"file": ("b.jsonl", b"x")}, data={"seed": "x"})
    assert bad.status_code == 422 and bad.json()["error"]["field"] == "seed"
    assert count() == before  # refused by the handler: nothing of it was kept
