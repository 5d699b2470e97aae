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


@pytest.mark.timeout(120)  # a lock held while its commit waits for a thread ends only at SQLite's busy timeout
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_many_writers_on_few_threads_all_finish(configure: Any, env: Any) -> None:
    """A handler that wrote holds SQLite's write lock until its session ends, after its answer is serialised
    on a handler thread. Were every thread taken by writers waiting for that lock, each would be answered
    503 after SQLite's 30 s busy timeout (seen in CI: twenty uploads at once on sixteen threads). Sessions
    are fewer than threads, so all finish."""
    from concurrent.futures import ThreadPoolExecutor

    from fastapi.testclient import TestClient

    from app.main import create_app

    configure(web_threads=3)
    with TestClient(create_app()) as web:
        make_admin(web)
        web.headers["X-CSRF-Token"] = csrf_of(web, "/datasets")

        def upload(index: int) -> int:
            answer = web.post(
                "/api/v1/datasets",
                files={"file": (f"{index}.jsonl", b'{"text": "a b"}\n' * 50)},
                data={"name": f"d{index}"},
            )
            return answer.status_code

        with ThreadPoolExecutor(max_workers=24) as pool:
            statuses = list(pool.map(upload, range(32)))
    assert statuses == [202] * 32, statuses


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_an_upload_whose_commit_fails_is_answered_503_and_leaves_no_file(
    client: Any, env: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sqlalchemy.exc import OperationalError

    make_admin(client)
    client.headers["X-CSRF-Token"] = csrf_of(client, "/datasets")
    uploads = env.data_dir / "artifacts" / "uploads"
    before = set(uploads.glob("*")) if uploads.exists() else set()
    original = Session.commit

    from app.db.models import Dataset

    def commit(self: Session) -> None:  # the commit of the request that made a dataset fails
        if any(isinstance(row, Dataset) for row in self.identity_map.values()):
            raise OperationalError("COMMIT", {}, Exception("database is locked"))
        original(self)

    monkeypatch.setattr(Session, "commit", commit)
    for path, extra in (("/api/v1/datasets", {}), ("/v1/files", {"purpose": "fine-tune"})):
        answer = client.post(path, files={"file": ("a.jsonl", b'{"text": "a b"}\n')}, data=extra)
        assert answer.status_code == 503 and answer.headers["retry-after"], answer.text
        assert (set(uploads.glob("*")) if uploads.exists() else set()) == before  # the stored file went again
    monkeypatch.setattr(Session, "commit", original)
    assert client.post("/api/v1/datasets", files={"file": ("a.jsonl", b'{"text": "a b"}\n')}).status_code == 202
    assert len(set(uploads.glob("*")) - before) == 1
