"""GET /healthz: 200 once the web app, the database (at head) and the broker are ready; 503 before.

It never waits behind user traffic: the handler runs on the event loop and does its checks in threads of its
own (not the pool every request shares) on a database engine of its own (no pooled connections to wait for),
within a second; a check that takes longer counts as not ready."""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import lru_cache

import anyio
from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.pool import NullPool

from app.core.config import get_settings
from app.core.queue import broker_ready
from app.db.migrations import current_revisions, head_revisions

router = APIRouter(tags=["health"])
CHECK_SECONDS = 1.0
_LIMITER = anyio.CapacityLimiter(4)
_MIGRATED: dict[str, float] = {}  # a database found at head, and when: the schema is read again after a minute


@lru_cache
def _engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        return create_engine(url, poolclass=NullPool, connect_args={"timeout": CHECK_SECONDS})
    return create_engine(url, poolclass=NullPool, connect_args={"connect_timeout": 1})


def _database() -> str:
    url = get_settings().sqlalchemy_url
    try:
        engine = _engine(url)
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        if time.monotonic() - _MIGRATED.get(url, -1e9) < 60:
            return "ok"
        if set(current_revisions(engine)) != set(head_revisions()):
            return "not migrated"
        _MIGRATED[url] = time.monotonic()
        return "ok"
    except Exception as exc:
        return f"unreachable: {type(exc).__name__}"


def _broker() -> str:
    return "ok" if broker_ready(timeout=CHECK_SECONDS) else "unreachable"


@router.get("/healthz", summary="Readiness of web, database and broker")
async def healthz() -> JSONResponse:
    late = "unreachable: no answer within a second"
    checks = {"database": late, "broker": late}

    async def check(name: str, probe: Callable[[], str]) -> None:
        checks[name] = await anyio.to_thread.run_sync(probe, limiter=_LIMITER, abandon_on_cancel=True)

    with anyio.move_on_after(CHECK_SECONDS + 0.5):
        async with anyio.create_task_group() as group:
            group.start_soon(check, "database", _database)
            group.start_soon(check, "broker", _broker)
    ready = all(value == "ok" for value in checks.values())
    return JSONResponse(
        {"status": "ok" if ready else "unavailable", "checks": checks}, status_code=200 if ready else 503
    )
