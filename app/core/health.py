"""GET /healthz: 200 once the web app, the database (at head) and the broker are ready; 503 before."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy import text

from app.core.queue import broker_ready
from app.db.migrations import current_revisions, head_revisions
from app.db.session import get_engine

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="Readiness of web, database and broker")
def healthz() -> JSONResponse:
    checks: dict[str, str] = {}
    try:
        engine = get_engine()
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        checks["database"] = "ok" if set(current_revisions(engine)) == set(head_revisions()) else "not migrated"
    except Exception as exc:
        checks["database"] = f"unreachable: {type(exc).__name__}"
    checks["broker"] = "ok" if broker_ready() else "unreachable"
    ready = all(value == "ok" for value in checks.values())
    return JSONResponse(
        {"status": "ok" if ready else "unavailable", "checks": checks}, status_code=200 if ready else 503
    )
