"""JSON API for background runs: status, event log, cancel."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Depends

from app.core.deps import SessionDep, csrf_protect
from app.core.errors import NotFound
from app.core.i18n import _
from app.core.validation import AfterSequence
from app.runs import service
from app.runs.schemas import ActiveRunRead, RunEventRead, RunRead
from app.users.deps import CurrentUser

router = APIRouter(prefix="/api/v1/runs", tags=["runs"], dependencies=[Depends(csrf_protect)])


@router.get("", response_model=list[ActiveRunRead], summary="Queued and running runs (administrators: everyone's)")
def active_runs(session: SessionDep, user: CurrentUser) -> list[ActiveRunRead]:
    return [
        ActiveRunRead.model_validate({**RunRead.model_validate(a.run).model_dump(), "owner": a.owner_email})
        for a in service.active_runs(session, user=user)
    ]


@router.get("/{run_id}", response_model=RunRead, summary="A background run")
def get_run(run_id: uuid.UUID, session: SessionDep, user: CurrentUser) -> RunRead:
    return RunRead.model_validate(service.get_run_as(session, run_id, user=user))


@router.get("/{run_id}/events", response_model=list[RunEventRead], summary="A run's event log")
def get_events(
    run_id: uuid.UUID, session: SessionDep, user: CurrentUser, after: AfterSequence = 0
) -> list[RunEventRead]:
    service.get_run_as(session, run_id, user=user)
    return [RunEventRead.model_validate(e) for e in service.list_events(session, run_id, after=after)]


@router.post("/{run_id}/cancel", response_model=RunRead, summary="Cancel a run (administrators: anyone's)")
def cancel_run(run_id: uuid.UUID, session: SessionDep, user: CurrentUser) -> RunRead:
    run = service.get_run_as(session, run_id, user=user)
    if run.owner_id is None and not user.is_admin:
        raise NotFound(_("No such run."))
    return RunRead.model_validate(service.request_cancel(session, run))
