"""JSON API for training jobs."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Depends, Query, Response
from fastapi.responses import PlainTextResponse, StreamingResponse
from sqlalchemy.orm import Session

from app.basemodels import service as models
from app.core.deps import SessionDep, csrf_protect
from app.core.errors import InvalidInput
from app.core.i18n import _, gettext
from app.core.validation import AfterSequence, ticked_ids
from app.db.models import RunStatus, TrainingJob
from app.jobs import compare as comparing
from app.jobs import files, presets, service, sizing
from app.jobs.schemas import (
    CheckpointRead,
    ComparisonRead,
    EstimateRead,
    EstimateRequest,
    JobCreate,
    JobRead,
    JobResume,
    MetricRow,
    PresetCreate,
    PresetRead,
)
from app.jobs.spec import TrainingSpec
from app.runs import logs as run_logs
from app.runs.schemas import RunEventRead, RunRead
from app.runs.service import list_events
from app.users.deps import CurrentUser

router = APIRouter(prefix="/api/v1/jobs", tags=["jobs"], dependencies=[Depends(csrf_protect)])
preset_router = APIRouter(prefix="/api/v1/presets", tags=["presets"], dependencies=[Depends(csrf_protect)])


def to_read(session: Session, job: TrainingJob) -> JobRead:
    run = service.job_run(session, job)
    return JobRead(
        id=job.id,
        name=job.name,
        model_id=job.base_model_id,
        dataset_version_id=job.dataset_version_id,
        origin=job.origin,
        general_version_id=job.general_version_id,
        spec=job.spec,
        created_at=job.created_at,
        status=service.job_status(run),
        run=RunRead.model_validate(run),
        adapter_available=run.status == RunStatus.succeeded and files.final_dir(job).is_dir(),
        cloned_from_id=job.cloned_from_id,
        resume_checkpoint=job.resume_checkpoint,
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


@router.post("/estimate", response_model=EstimateRead, summary="Memory, time and problems of a spec, before launch")
def estimate(body: EstimateRequest, session: SessionDep, user: CurrentUser) -> EstimateRead:
    model = models.get_model(session, body.model_id, user=user)
    _dataset, version = service.owned_version(session, body.dataset_version_id, user=user)
    result = sizing.estimate(session, body.spec, model=model, version=version, gpu_gib=body.gpu_gib, user=user)
    return EstimateRead.model_validate(
        {
            **vars(result),
            "problems": [p.model_dump() for p in result.problems],
            "warnings": [w.model_dump() for w in result.warnings],
        }
    )


@router.get("/compare", response_model=ComparisonRead, summary="Two to six jobs side by side: ?id=A&id=B")
def compare(session: SessionDep, user: CurrentUser, id: list[str] = Query(default=[])) -> ComparisonRead:
    ids = ticked_ids(id, most=6, unknown=_("No such training job."), count=_("Name two to six jobs to compare."))
    found = comparing.compare(session, [service.get_job(session, job_id, user=user) for job_id in ids])
    return ComparisonRead(
        jobs=[job.id for job in found.jobs],
        statuses=[service.job_status(run) for run in found.runs],
        models=found.models,
        datasets=found.datasets,
        differing=dict(found.differing),
        results=dict(found.results),
        curves=[vars(curve) for curve in found.curves],
    )


@router.get("/{job_id}", response_model=JobRead, summary="A training job")
def get_job(job_id: uuid.UUID, session: SessionDep, user: CurrentUser) -> JobRead:
    return to_read(session, service.get_job(session, job_id, user=user))


@router.get("/{job_id}/metrics", response_model=list[MetricRow], summary="Logged metrics after a step")
def job_metrics(
    job_id: uuid.UUID, session: SessionDep, user: CurrentUser, after: AfterSequence = -1
) -> list[MetricRow]:
    job = service.get_job(session, job_id, user=user)
    return [MetricRow.model_validate(row) for row in files.metrics(job, after_step=after)]


@router.get("/{job_id}/events", response_model=list[RunEventRead], summary="The job's event log")
def job_events(
    job_id: uuid.UUID, session: SessionDep, user: CurrentUser, after: AfterSequence = 0
) -> list[RunEventRead]:
    job = service.get_job(session, job_id, user=user)
    return [RunEventRead.model_validate(e) for e in list_events(session, service.job_run(session, job).id, after=after)]


@router.post("/{job_id}/cancel", response_model=RunRead, summary="Cancel a job")
def cancel(job_id: uuid.UUID, session: SessionDep, user: CurrentUser) -> RunRead:
    job = service.get_job(session, job_id, user=user)
    return RunRead.model_validate(service.cancel_job(session, job))


@router.post(
    "/{job_id}/pause",
    response_model=RunRead,
    summary="Pause a job: it stops at its next checkpoint and frees the worker",
)
def pause(job_id: uuid.UUID, session: SessionDep, user: CurrentUser) -> RunRead:
    job = service.get_job(session, job_id, user=user)
    return RunRead.model_validate(service.pause_job(session, job))


@router.post("/{job_id}/continue", response_model=RunRead, summary="Continue a paused job from its latest checkpoint")
def continue_paused(job_id: uuid.UUID, session: SessionDep, user: CurrentUser) -> RunRead:
    job = service.get_job(session, job_id, user=user)
    return RunRead.model_validate(service.resume_job(session, job))


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


@router.get(
    "/{job_id}/tensorboard",
    summary="The job's TensorBoard event files (every attempt) as a zip, for tensorboard --logdir",
    response_class=Response,
)
def tensorboard(job_id: uuid.UUID, session: SessionDep, user: CurrentUser) -> Response:
    job = service.get_job(session, job_id, user=user)
    name = f"refinery-tensorboard-{job.id.hex[:8]}.zip"
    disposition = {"Content-Disposition": f'attachment; filename="{name}"'}
    return Response(service.tensorboard_zip(job), media_type="application/zip", headers=disposition)


@router.get(
    "/{job_id}/log",
    response_class=PlainTextResponse,
    summary="The trainer's log: the last lines over every attempt (tail=N), or all of it (tail=0)",
)
def job_log(
    job_id: uuid.UUID, session: SessionDep, user: CurrentUser, tail: int = Query(200, ge=0, le=100_000)
) -> Response:
    run = service.job_run(session, service.get_job(session, job_id, user=user))
    if tail == 0:
        return StreamingResponse(run_logs.stream(run.id), media_type="text/plain; charset=utf-8")
    return PlainTextResponse(run_logs.tail(run.id, lines=tail))


@router.get("/{job_id}/checkpoints", response_model=list[CheckpointRead], summary="The job's complete checkpoints")
def job_checkpoints(job_id: uuid.UUID, session: SessionDep, user: CurrentUser) -> list[CheckpointRead]:
    job = service.get_job(session, job_id, user=user)
    return [CheckpointRead.model_validate(vars(c)) for c in files.checkpoints(job)]


@router.post(
    "/{job_id}/resume", response_model=JobRead, status_code=201, summary="A new job resuming from a checkpoint"
)
def resume(job_id: uuid.UUID, body: JobResume, session: SessionDep, user: CurrentUser) -> JobRead:
    source = service.get_job(session, job_id, user=user)
    if source.dataset_version_id is None:
        raise InvalidInput(_("An uploaded adapter has no checkpoints to resume from."), field="checkpoint")
    job = service.create_job(
        session,
        user=user,
        name=body.name or f"{source.name} ({body.checkpoint})",
        model_id=source.base_model_id,
        version_id=source.dataset_version_id,
        spec=body.spec or TrainingSpec.model_validate(source.spec),
        general_version_id=source.general_version_id,
        cloned_from=source,
        resume_checkpoint=body.checkpoint,
    )
    return to_read(session, job)


def _builtin_read(preset: presets.BuiltinPreset) -> PresetRead:
    return PresetRead(
        id=preset.key, name=gettext(preset.name), builtin=True, spec=preset.spec().model_dump(mode="json")
    )


@preset_router.get("", response_model=list[PresetRead], summary="Built-in presets and yours")
def list_presets(session: SessionDep, user: CurrentUser) -> list[PresetRead]:
    mine = [
        PresetRead(id=str(p.id), name=p.name, builtin=False, spec=p.spec)
        for p in presets.list_presets(session, user=user)
    ]
    return [_builtin_read(p) for p in presets.BUILTIN] + mine


@preset_router.post("", response_model=PresetRead, status_code=201, summary="Save a spec as a preset")
def create_preset(body: PresetCreate, session: SessionDep, user: CurrentUser) -> PresetRead:
    preset = presets.save_preset(session, user=user, name=body.name, spec=body.spec)
    return PresetRead(id=str(preset.id), name=preset.name, builtin=False, spec=preset.spec)


@preset_router.delete("/{preset_id}", status_code=204, summary="Delete one of your presets")
def delete_preset(preset_id: uuid.UUID, session: SessionDep, user: CurrentUser) -> None:
    presets.delete_preset(session, presets.get_preset(session, preset_id, user=user))
