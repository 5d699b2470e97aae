"""Page: the background work queued and running (administrators see everyone's and can cancel any of it)."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Depends, Request
from fastapi.responses import RedirectResponse, Response

from app.core.deps import SessionDep, csrf_protect
from app.core.templating import render
from app.runs import service
from app.users.deps import PageUser

router = APIRouter(dependencies=[Depends(csrf_protect)], include_in_schema=False)


@router.get("/settings/runs")
def runs_page(request: Request, session: SessionDep, user: PageUser) -> Response:
    return render(request, "settings/runs.html", {"active": service.active_runs(session, user=user)})


@router.post("/settings/runs/{run_id}/cancel")
def runs_cancel(request: Request, session: SessionDep, user: PageUser, run_id: uuid.UUID) -> Response:
    run = service.get_run_as(session, run_id, user=user)
    if not run.status.is_final:
        service.request_cancel(session, run)
    return RedirectResponse("/settings/runs", status_code=303)
