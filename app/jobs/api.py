"""JSON API for training jobs."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Depends
from fastapi.responses import StreamingResponse
from sqlalchemy.orm import Session

from app.core.deps import CurrentUser, SessionDep, csrf_protect
from app.db.models import RunStatus, TrainingJob
from app.jobs import service
from app.jobs.schemas import JobCreate, JobRead, MetricRow
from app.runs.schemas import RunEventRead, RunRead
from app.runs.service import list_events

router = APIRouter(prefix="/api/v1/jobs", tags=["jobs"], dependencies=[Depends(csrf_protect)])


def to_read(session: Session, job: TrainingJob) -> JobRead:
    run = service.job_run(session, job)
    return JobRead(
        id=job.id,
        name=job.name,
        model_id=job.base_model_id,
        dataset_version_id=job.dataset_version_id,
        general_version_id=job.general_version_id,
        spec=job.spec,
        created_at=job.created_at,
        run=RunRead.model_validate(run),
        adapter_available=run.status == RunStatus.succeeded and service.final_dir(job).is_dir(),
    )


@router.post("", response_model=JobRead, status_code=201, summary="Launch a training job")
def create_job(body: JobCreate, session: SessionDep, user: CurrentUser) -> JobRead:
    job = service.create_job(
        session,
        user=user,
        name=body.name,
        model_id=body.model_id,
        version_id=body.dataset_version_id,
        spec=body.spec,
        general_version_id=body.general_version_id,
    )
    return to_read(session, job)


@router.get("", response_model=list[JobRead], summary="Your training jobs")
def list_jobs(session: SessionDep, user: CurrentUser) -> list[JobRead]:
    return [to_read(session, j) for j in service.list_jobs(session, user=user)]


@router.get("/{job_id}", response_model=JobRead, summary="A training job")
def get_job(job_id: uuid.UUID, session: SessionDep, user: CurrentUser) -> JobRead:
    return to_read(session, service.get_job(session, job_id, user=user))


@router.get("/{job_id}/metrics", response_model=list[MetricRow], summary="Logged metrics after a step")
def job_metrics(job_id: uuid.UUID, session: SessionDep, user: CurrentUser, after: int = 0) -> list[MetricRow]:
    job = service.get_job(session, job_id, user=user)
    return [MetricRow.model_validate(row) for row in service.metrics(job, after_step=after)]


@router.get("/{job_id}/events", response_model=list[RunEventRead], summary="The job's event log")
def job_events(job_id: uuid.UUID, session: SessionDep, user: CurrentUser, after: int = 0) -> list[RunEventRead]:
    job = service.get_job(session, job_id, user=user)
    return [RunEventRead.model_validate(e) for e in list_events(session, service.job_run(session, job).id, after=after)]


@router.post("/{job_id}/cancel", response_model=RunRead, summary="Cancel a job")
def cancel(job_id: uuid.UUID, session: SessionDep, user: CurrentUser) -> RunRead:
    job = service.get_job(session, job_id, user=user)
    return RunRead.model_validate(service.cancel_job(session, job))


@router.get(
    "/{job_id}/adapter",
    summary="The trained adapter as a zip (PEFT files, tokenizer, model card)",
    response_class=StreamingResponse,
)
def adapter(job_id: uuid.UUID, session: SessionDep, user: CurrentUser) -> StreamingResponse:
    job = service.get_job(session, job_id, user=user)
    name = f"refinery-adapter-{job.id.hex[:8]}.zip"
    return StreamingResponse(
        service.adapter_zip(session, job),
        media_type="application/zip",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )
