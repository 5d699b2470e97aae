"""Training pages: list, new job (form from TrainingSpec with a live estimate), job page (live charts)."""

from __future__ import annotations

import json
import uuid
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response, StreamingResponse
from sqlalchemy.orm import Session
from starlette.datastructures import UploadFile

from app.basemodels import service as models
from app.core.deps import PageUser, SessionDep, csrf_protect
from app.core.errors import InvalidInput, NotFound, RefineryError
from app.core.i18n import _
from app.core.templating import render
from app.db.models import ModelStatus, RunStatus, TrainingJob, User
from app.jobs import service
from app.jobs.forms import form_fields, spec_from_form, spec_from_yaml, spec_to_yaml
from app.jobs.spec import TrainingSpec
from app.runs.service import list_events

router = APIRouter(dependencies=[Depends(csrf_protect)], include_in_schema=False)
GPU_SIZES = (8, 16, 24, 40, 48, 80, 141)


def _choices(session: Session, user: User) -> dict[str, Any]:
    return {
        "models": [m for m in models.list_models(session, user=user) if m.status == ModelStatus.ready],
        "versions": service.usable_versions(session, user=user),
        "gpu_sizes": GPU_SIZES,
    }


@router.get("/jobs")
def jobs_page(request: Request, session: SessionDep, user: PageUser) -> Response:
    jobs = service.list_jobs(session, user=user)
    return render(request, "jobs/index.html", {"jobs": jobs, "runs": {j.id: service.job_run(session, j) for j in jobs}})


@router.get("/jobs/new")
def new_job_page(request: Request, session: SessionDep, user: PageUser) -> Response:
    """A blank form, or (``?from=JOB``) a clone of an earlier job to change and launch again."""
    selected = request.query_params.get("version", "")
    form: dict[str, str] = {}
    values = None
    source = request.query_params.get("from")
    if source:
        try:
            job = service.get_job(session, uuid.UUID(source), user=user)
        except ValueError as exc:
            raise NotFound(_("No such training job.")) from exc
        values = TrainingSpec.model_validate(job.spec)
        selected = str(job.dataset_version_id)
        form = {"model_id": str(job.base_model_id), "name": f"{job.name} (2)", "cloned_from": str(job.id)}
    return render(
        request,
        "jobs/new.html",
        {**_choices(session, user), "fields": form_fields(values), "selected": selected, "form": form},
    )


@router.post("/jobs/new/import")
async def import_spec(request: Request, session: SessionDep, user: PageUser) -> Response:
    """Fill the form from an exported YAML spec (nothing is launched)."""
    form = await request.form(max_files=1, max_fields=5)
    upload = form.get("spec_file")
    error = None
    values = None
    try:
        if not isinstance(upload, UploadFile):
            raise InvalidInput(_("Choose a YAML file exported from a job."), field="spec_file")
        raw = await upload.read(64 * 1024 + 1)
        if len(raw) > 64 * 1024:
            raise InvalidInput(_("A spec file is at most 64 KB."), field="spec_file")
        values = spec_from_yaml(raw)
    except RefineryError as exc:
        error = exc.message
    finally:
        await form.close()
    return render(
        request,
        "jobs/new.html",
        {**_choices(session, user), "fields": form_fields(values), "selected": "", "form": {}, "error": error},
        status_code=422 if error else 200,
    )


@router.get("/jobs/{job_id}/spec.yaml")
def export_spec(request: Request, session: SessionDep, user: PageUser, job_id: uuid.UUID) -> Response:
    job = service.get_job(session, job_id, user=user)
    return Response(
        spec_to_yaml(TrainingSpec.model_validate(job.spec)),
        media_type="application/x-yaml",
        headers={"Content-Disposition": f'attachment; filename="spec-{job.id.hex[:8]}.yaml"'},
    )


async def _form(request: Request) -> dict[str, str]:
    form = await request.form(max_files=0, max_fields=100)
    return {k: v for k, v in form.items() if isinstance(v, str)}


def _parse(session: Session, user: User, form: dict[str, str]) -> tuple[TrainingSpec, Any, Any]:
    spec = service.parse_spec(spec_from_form(form))
    model = models.get_model(session, uuid.UUID(form.get("model_id") or str(uuid.UUID(int=0))), user=user)
    _dataset, version = service.owned_version(
        session, uuid.UUID(form.get("dataset_version_id") or str(uuid.UUID(int=0))), user=user
    )
    return spec, model, version


@router.post("/jobs/estimate")
async def estimate(request: Request, session: SessionDep, user: PageUser) -> Response:
    form = await _form(request)
    try:
        spec, model, version = _parse(session, user, form)
        gpu = float(form.get("gpu_gib") or 24)
        result = service.estimate(session, spec, model=model, version=version, gpu_gib=gpu)
    except (RefineryError, ValueError) as exc:
        message = exc.message if isinstance(exc, RefineryError) else str(exc)
        return render(request, "jobs/_estimate.html", {"error": message})
    return render(request, "jobs/_estimate.html", {"estimate": result})


@router.post("/jobs")
async def create_job(request: Request, session: SessionDep, user: PageUser) -> Response:
    form = await _form(request)
    try:
        spec, model, version = _parse(session, user, form)
        general = form.get("general_version_id")
        cloned = form.get("cloned_from")
        job = service.create_job(
            session,
            user=user,
            name=form.get("name", ""),
            model_id=model.id,
            version_id=version.id,
            spec=spec,
            general_version_id=uuid.UUID(general) if general else None,
            cloned_from=service.get_job(session, uuid.UUID(cloned), user=user) if cloned else None,
        )
    except (RefineryError, ValueError) as exc:
        message = exc.message if isinstance(exc, RefineryError) else str(exc)
        field = exc.field if isinstance(exc, RefineryError) else None
        try:
            values = TrainingSpec.model_validate(spec_from_form(form))
        except ValueError:
            values = None
        return render(
            request,
            "jobs/new.html",
            {
                **_choices(session, user),
                "fields": form_fields(values),
                "selected": form.get("dataset_version_id", ""),
                "form": form,
                "error": message,
                "error_field": field,
            },
            status_code=422,
        )
    return RedirectResponse(f"/jobs/{job.id}", status_code=303)


def _job_context(session: Session, job: TrainingJob) -> dict[str, Any]:
    run = service.job_run(session, job)
    return {
        "job": job,
        "run": run,
        "events": list_events(session, run.id),
        "live": not run.status.is_final,
        "adapter_ready": run.status == RunStatus.succeeded and service.final_dir(job).is_dir(),
        "spec": job.spec,
        "chart_labels": json.dumps(_chart_labels()),
    }


def _chart_labels() -> dict[str, str]:
    from app.core.i18n import _

    return {
        "loss": _("training loss"),
        "eval_loss": _("eval loss"),
        "learning_rate": _("learning rate"),
        "grad_norm": _("gradient norm"),
        "tokens_per_second": _("tokens/s"),
        "step": _("step"),
        "spike": _("Loss spike at step %(step)s: %(value)s, more than twice the recent median."),
        "diverging": _(
            "The loss is rising: the last 10 steps average more than the 10 before by 20%% or "
            "more. Consider a lower learning rate."
        ),
    }


@router.get("/jobs/{job_id}")
def job_page(request: Request, session: SessionDep, user: PageUser, job_id: uuid.UUID) -> Response:
    job = service.get_job(session, job_id, user=user)
    return render(request, "jobs/detail.html", _job_context(session, job))


@router.get("/jobs/{job_id}/_live")
def job_live(request: Request, session: SessionDep, user: PageUser, job_id: uuid.UUID) -> Response:
    job = service.get_job(session, job_id, user=user)
    context = _job_context(session, job)
    if not context["live"]:
        return Response(status_code=204, headers={"HX-Refresh": "true"})
    return render(request, "jobs/_live.html", context)


@router.get("/jobs/{job_id}/metrics")
def job_metrics(request: Request, session: SessionDep, user: PageUser, job_id: uuid.UUID) -> Response:
    job = service.get_job(session, job_id, user=user)
    try:
        after = int(request.query_params.get("after", "0"))
    except ValueError:
        after = 0
    return JSONResponse(
        {"rows": service.metrics(job, after_step=after), "live": not service.job_run(session, job).status.is_final}
    )


@router.post("/jobs/{job_id}/cancel")
def cancel(request: Request, session: SessionDep, user: PageUser, job_id: uuid.UUID) -> Response:
    job = service.get_job(session, job_id, user=user)
    service.cancel_job(session, job)
    return RedirectResponse(f"/jobs/{job.id}", status_code=303)


@router.get("/jobs/{job_id}/adapter.zip")
def adapter(request: Request, session: SessionDep, user: PageUser, job_id: uuid.UUID) -> Response:
    job = service.get_job(session, job_id, user=user)
    name = f"refinery-adapter-{job.id.hex[:8]}.zip"
    return StreamingResponse(
        service.adapter_zip(session, job),
        media_type="application/zip",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )
