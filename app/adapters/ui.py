"""Adapter pages: the registry (filterable by tag) and one adapter with its lineage."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Depends, Request
from fastapi.responses import RedirectResponse, Response

from app.adapters import service
from app.core.deps import PageUser, SessionDep, csrf_protect
from app.core.templating import render
from app.evaluation.service import verdict

router = APIRouter(dependencies=[Depends(csrf_protect)], include_in_schema=False)


@router.get("/adapters")
def index(request: Request, session: SessionDep, user: PageUser) -> Response:
    tag = request.query_params.get("tag", "")
    context = {
        "rows": service.list_adapters(session, user=user, tag=tag),
        "tags": service.all_tags(session, user=user),
        "tag": tag,
    }
    return render(request, "adapters/index.html", context)


@router.get("/adapters/{job_id}")
def detail(request: Request, session: SessionDep, user: PageUser, job_id: uuid.UUID) -> Response:
    row = service.get_adapter(session, job_id, user=user)
    context = {
        "row": row,
        "lineage": service.lineage(session, row, user=user),
        "verdict": verdict(row.evaluation.summary) if row.evaluation and row.evaluation.summary else "",
    }
    return render(request, "adapters/detail.html", context)


@router.post("/adapters/{job_id}/tags")
async def tags(request: Request, session: SessionDep, user: PageUser, job_id: uuid.UUID) -> Response:
    row = service.get_adapter(session, job_id, user=user)
    form = await request.form(max_files=0, max_fields=3)
    service.set_tags(row.job, str(form.get("tags", "")))
    return RedirectResponse(f"/adapters/{job_id}", status_code=303)
