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
from app.core.config import get_settings
from app.core.deps import SessionDep, csrf_protect
from app.core.errors import InvalidInput, NotFound, RefineryError
from app.core.forms import FormDep, text_fields
from app.core.i18n import _
from app.core.templating import render, render_live
from app.core.validation import ticked_ids
from app.datasets.storage import artifact_path
from app.db.models import ModelStatus, RunStatus, TrainingJob, User
from app.evaluation import judges
from app.evaluation import service as evaluations
from app.graders import library
from app.jobs import compare as comparing
from app.jobs import files, presets, service, sizing, tracking
from app.jobs.forms import form_fields, mix_rows, spec_from_form, spec_from_yaml, spec_to_yaml
from app.jobs.preview import preview
from app.jobs.spec import METHOD_DEFAULTS, USUAL_LEARNING_RATES, TrainingSpec, method_for
from app.runs import logs as run_logs
from app.runs.service import list_events
from app.users.deps import PageUser

router = APIRouter(dependencies=[Depends(csrf_protect)], include_in_schema=False)
GPU_SIZES = (8, 16, 24, 40, 48, 80, 141)


def _choices(
    session: Session, user: User, values: TrainingSpec | None = None, form: dict[str, str] | None = None
) -> dict[str, Any]:
    reward_help = TrainingSpec.model_fields["reward_job_id"].description or ""
    versions = service.usable_versions(session, user=user)
    return {
        "models": [m for m in models.list_models(session, user=user) if m.status == ModelStatus.ready],
        "versions": versions,
        "gpu_sizes": GPU_SIZES,
        "reward_jobs": service.reward_models(session, user=user),
        "reward_selected": values.reward_job_id if values else "",
        "reward_help": _(reward_help),
        "graders": library.list_graders(session, user=user),
        "grader_help": _(TrainingSpec.model_fields["grader"].description or ""),
        "spec_grader": values.grader if values else None,
        "startable": service.startable_jobs(session, user=user),
        "start_help": _(TrainingSpec.model_fields["start_from_job_id"].description or ""),
        "start_selected": values.start_from_job_id if values else "",
        "presets": presets.list_presets(session, user=user),
        "builtin_presets": presets.BUILTIN,
        # the form's script: what each method sets when chosen, and the learning rates it usually trains with
        "method_defaults": json.dumps(METHOD_DEFAULTS),
        "usual_rates": json.dumps(USUAL_LEARNING_RATES),
        "version_methods": {str(v.id): method_for(v.kind_counts) for _d, v in versions},
        "mix_rows": mix_rows(values, form or {}),
        "mix_help": _(TrainingSpec.model_fields["mix"].description or ""),
    }


@router.get("/jobs")
def jobs_page(request: Request, session: SessionDep, user: PageUser) -> Response:
    jobs = service.list_jobs(session, user=user)  # runs, models and dataset versions preloaded
    runs = {j.id: service.job_run(session, j) for j in jobs}
    context = {
        "jobs": jobs,
        "runs": runs,
        "statuses": {job_id: service.job_status(run) for job_id, run in runs.items()},
        "labels": {j.id: service.job_label(session, j) for j in jobs},
        "durations": {job_id: service.run_seconds(run) for job_id, run in runs.items()},
    }
    return render(request, "jobs/index.html", context)


@router.get("/jobs/new")
def new_job_page(request: Request, session: SessionDep, user: PageUser) -> Response:
    """A blank form; ``?preset=KEY`` fills it from a preset; ``?from=JOB`` clones an earlier job to change
    and launch again, and with ``&checkpoint=checkpoint-N`` the new job resumes from that checkpoint."""
    query = request.query_params
    selected = query.get("version", "")
    form: dict[str, str] = {}
    values = None
    notice = None
    if query.get("preset"):
        values = presets.spec_of(session, query["preset"], user=user)
        if query.get("saved"):
            notice = _("Preset saved. The form below holds its values.")
    if selected and values is None:  # "Train on it": the method the version's records call for, with its defaults
        try:
            _dataset, version = service.owned_version(session, uuid.UUID(selected), user=user)
        except ValueError as exc:
            raise NotFound(_("No such dataset version.")) from exc
        method = method_for(version.kind_counts)
        values = TrainingSpec.model_validate({"method": method, **METHOD_DEFAULTS[method]})
    source = query.get("from")
    if source:
        try:
            job = service.get_job(session, uuid.UUID(source), user=user)
        except ValueError as exc:
            raise NotFound(_("No such training job.")) from exc
        values = TrainingSpec.model_validate(job.spec)
        selected = str(job.dataset_version_id or "")
        form = {"model_id": str(job.base_model_id), "name": f"{job.name} (2)", "cloned_from": str(job.id)}
        if job.general_version_id:
            form["general_version_id"] = str(job.general_version_id)
        checkpoint = query.get("checkpoint", "")
        if checkpoint:
            if checkpoint not in {c.name for c in files.checkpoints(job)}:
                raise NotFound(_("No such checkpoint."))
            form.update(resume_checkpoint=checkpoint, name=f"{job.name} ({checkpoint})")
    return render(
        request,
        "jobs/new.html",
        {
            **_choices(session, user, values, form),
            "fields": form_fields(values),
            "selected": selected,
            "form": form,
            "notice": notice,
        },
    )


def _form_again(
    request: Request, session: Session, user: User, form: dict[str, str], error: str, field: str | None, status: int
) -> Response:
    """The job form as the user filled it, with the error next to its field."""
    try:
        values = TrainingSpec.model_validate(spec_from_form(form))
    except (ValueError, RefineryError):
        values = None
    context = {
        **_choices(session, user, values, form),
        "fields": form_fields(values),
        "selected": form.get("dataset_version_id", ""),
        "form": form,
        "error": error,
        "error_field": field,
    }
    return render(request, "jobs/new.html", context, status_code=status)


@router.post("/jobs/presets")
def save_preset(request: Request, session: SessionDep, user: PageUser, sent: FormDep) -> Response:
    """'Save as preset' on the job form: the spec fields of the form, under a name."""
    form = text_fields(sent)
    try:
        spec = service.parse_spec(_spec_of(session, user, form))
        preset = presets.save_preset(session, user=user, name=form.get("preset_name", ""), spec=spec)
    except RefineryError as exc:
        return _form_again(request, session, user, form, exc.message, exc.field, exc.status_code)
    return RedirectResponse(f"/jobs/new?preset={preset.id}&saved=1", status_code=303)


@router.post("/jobs/presets/{preset_id}/delete")
def delete_preset(request: Request, session: SessionDep, user: PageUser, preset_id: uuid.UUID) -> Response:
    presets.delete_preset(session, presets.get_preset(session, preset_id, user=user))
    return RedirectResponse("/jobs/new", status_code=303)


@router.get("/jobs/compare")
def compare_page(request: Request, session: SessionDep, user: PageUser) -> Response:
    """Runs side by side: ``?id=A&id=B`` (two to six of the user's jobs)."""
    ids = ticked_ids(
        request.query_params.getlist("id"),
        most=6,
        unknown=_("No such training job."),
        count=_("Tick two to six jobs to compare."),
    )
    jobs = [service.get_job(session, job_id, user=user) for job_id in ids]
    comparison = comparing.compare(session, jobs)
    chart = {"curves": [vars(curve) for curve in comparison.curves], "labels": _chart_labels()}
    context = {
        **vars(comparison),
        "same_model": comparison.same_model,
        "same_dataset": comparison.same_dataset,
        "row_labels": comparing.row_labels(),
        "chart": json.dumps(chart),
    }
    return render(request, "jobs/compare.html", context)


@router.post("/jobs/new/import")
def import_spec(request: Request, session: SessionDep, user: PageUser, sent: FormDep) -> Response:
    """Fill the form from an exported YAML spec (nothing is launched)."""
    upload = sent.get("spec_file")
    error = None
    values = None
    try:
        if not isinstance(upload, UploadFile):
            raise InvalidInput(_("Choose a YAML file exported from a job."), field="spec_file")
        raw = upload.file.read(64 * 1024 + 1)
        if len(raw) > 64 * 1024:
            raise InvalidInput(_("A spec file is at most 64 KB."), field="spec_file")
        values = spec_from_yaml(raw)
    except RefineryError as exc:
        error = exc.message
    return render(
        request,
        "jobs/new.html",
        {**_choices(session, user, values), "fields": form_fields(values), "selected": "", "form": {}, "error": error},
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


def _spec_of(session: Session, user: User, form: dict[str, str]) -> dict[str, Any]:
    """The form's spec values; a saved grader picked as the reward is copied in (the job keeps its own copy)."""
    raw = spec_from_form(form)
    picked = form.get("reward_grader_id", "")
    if picked == "":
        raw.pop("grader", None)
    elif picked != "before":  # "before": the grader of the job this form was cloned from
        try:
            grader_id = uuid.UUID(picked)
        except ValueError:
            raise InvalidInput(_("No such grader."), field="reward_grader_id") from None
        raw["grader"] = library.get_grader(session, grader_id, user=user).spec
    return raw


def _parse(session: Session, user: User, form: dict[str, str]) -> tuple[TrainingSpec, Any, Any]:
    spec = service.parse_spec(_spec_of(session, user, form))
    model = models.get_model(session, uuid.UUID(form.get("model_id") or str(uuid.UUID(int=0))), user=user)
    _dataset, version = service.owned_version(
        session, uuid.UUID(form.get("dataset_version_id") or str(uuid.UUID(int=0))), user=user
    )
    return spec, model, version


@router.post("/jobs/estimate")
def estimate(request: Request, session: SessionDep, user: PageUser, sent: FormDep) -> Response:
    form = text_fields(sent)
    try:
        spec, model, version = _parse(session, user, form)
        gpu = float(form.get("gpu_gib") or 24)
        result = sizing.estimate(session, spec, model=model, version=version, gpu_gib=gpu, user=user)
        general = form.get("general_version_id")
        command = preview(
            spec,
            model_id=model.id,
            version_id=version.id,
            name=form.get("name", ""),
            general_version_id=uuid.UUID(general) if general and spec.method.value == "cpt" else None,
            base_url=str(request.base_url),
            email=user.email,
        )
    except (RefineryError, ValueError) as exc:
        message = exc.message if isinstance(exc, RefineryError) else str(exc)
        return render(request, "jobs/_estimate.html", {"error": message})
    return render(request, "jobs/_estimate.html", {"estimate": result, "command": command})


@router.post("/jobs")
def create_job(request: Request, session: SessionDep, user: PageUser, sent: FormDep) -> Response:
    form = text_fields(sent)
    try:
        spec, model, version = _parse(session, user, form)
        general = form.get("general_version_id")
        cloned = form.get("cloned_from")
        resume_checkpoint = form.get("resume_checkpoint") or None
        job = service.create_job(
            session,
            user=user,
            name=form.get("name", ""),
            model_id=model.id,
            version_id=version.id,
            spec=spec,
            general_version_id=uuid.UUID(general) if general else None,
            cloned_from=service.get_job(session, uuid.UUID(cloned), user=user) if cloned else None,
            resume_checkpoint=resume_checkpoint,
        )
    except (RefineryError, ValueError) as exc:
        if isinstance(exc, RefineryError):
            return _form_again(request, session, user, form, exc.message, exc.field, 422)
        return _form_again(request, session, user, form, str(exc), None, 422)
    return RedirectResponse(f"/jobs/{job.id}", status_code=303)


def _job_context(session: Session, job: TrainingJob, user: User) -> dict[str, Any]:
    run = service.job_run(session, job)
    return {
        "job": job,
        "run": run,
        "events": list_events(session, run.id),
        "live": service.is_live(run),
        "adapter_ready": run.status == RunStatus.succeeded and files.final_dir(job).is_dir(),
        "tensorboard": bool(files.tensorboard_zip(job) is not None),
        "mlflow": tracking.run_link(artifact_path(job.storage_key)),
        "status": service.job_status(run),
        "evaluations": evaluations.for_job(session, job),
        "eval_sample_size": get_settings().eval_sample_size,
        "eval_versions": service.usable_versions(session, user=user),
        "judges": judges.list_judges(session),
        "graders": library.list_graders(session, user=user),
        "checkpoints": files.checkpoints(job),
        "spec": job.spec,
        "chart_labels": json.dumps(_chart_labels()),
        "log": run_logs.tail(run.id),
        "log_live": service.is_live(run),
    }


def _chart_labels() -> dict[str, str]:
    from app.core.i18n import _

    return {
        "loss": _("training loss"),
        "eval_loss": _("eval loss"),
        "learning_rate": _("learning rate"),
        "grad_norm": _("gradient norm"),
        "tokens_per_second": _("tokens/s"),
        "reward": _("mean reward"),
        "reward_low": _("mean − std"),
        "reward_high": _("mean + std"),
        "step": _("step"),
        "compare_loss": _("Training loss"),
        "compare_eval_loss": _("Eval loss"),
        "spike": _("Loss spike at step %(step)s: %(value)s, more than twice the recent median."),
        "diverging": _(
            "The loss is rising: the last 10 steps average more than the 10 before by 20%% or "
            "more. Consider a lower learning rate."
        ),
    }


@router.get("/jobs/{job_id}")
def job_page(request: Request, session: SessionDep, user: PageUser, job_id: uuid.UUID) -> Response:
    job = service.get_job(session, job_id, user=user)
    return render(request, "jobs/detail.html", _job_context(session, job, user))


@router.get("/jobs/{job_id}/_live")
def job_live(request: Request, session: SessionDep, user: PageUser, job_id: uuid.UUID) -> Response:
    job = service.get_job(session, job_id, user=user)
    context = _job_context(session, job, user)
    return render_live(request, "jobs/_live.html", context, live=context["live"])


@router.get("/jobs/{job_id}/metrics")
def job_metrics(request: Request, session: SessionDep, user: PageUser, job_id: uuid.UUID) -> Response:
    job = service.get_job(session, job_id, user=user)
    try:
        after = int(request.query_params.get("after", "-1"))
    except ValueError:
        after = -1
    run = service.job_run(session, job)
    return JSONResponse(
        {"rows": files.metrics(job, after_step=after), "live": service.is_live(run), "total_steps": total_steps(run)}
    )


def total_steps(run: Any) -> int | None:
    """How many steps the job takes (the charts' x axis runs to it): the trainer reports it with each step's
    progress, and the finished run has taken them all."""
    if run.result and isinstance(run.result.get("steps"), int):
        return int(run.result["steps"])
    params = run.progress_params or {}
    if run.progress_code == "step" and isinstance(params.get("total"), int):
        return int(params["total"])
    return None


@router.post("/jobs/{job_id}/cancel")
def cancel(request: Request, session: SessionDep, user: PageUser, job_id: uuid.UUID) -> Response:
    job = service.get_job(session, job_id, user=user)
    service.cancel_job(session, job)
    return RedirectResponse(f"/jobs/{job.id}", status_code=303)


@router.post("/jobs/{job_id}/pause")
def pause(request: Request, session: SessionDep, user: PageUser, job_id: uuid.UUID) -> Response:
    job = service.get_job(session, job_id, user=user)
    service.pause_job(session, job)
    return RedirectResponse(f"/jobs/{job.id}", status_code=303)


@router.post("/jobs/{job_id}/continue")
def continue_paused(request: Request, session: SessionDep, user: PageUser, job_id: uuid.UUID) -> Response:
    job = service.get_job(session, job_id, user=user)
    service.resume_job(session, job)
    return RedirectResponse(f"/jobs/{job.id}", status_code=303)


@router.get("/jobs/{job_id}/log")
def trainer_log(request: Request, session: SessionDep, user: PageUser, job_id: uuid.UUID) -> Response:
    """The trainer's whole log (every attempt), as a download."""
    job = service.get_job(session, job_id, user=user)
    run = service.job_run(session, job)
    return StreamingResponse(
        run_logs.stream(run.id),
        media_type="text/plain; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="refinery-job-{job.id.hex[:8]}.log"'},
    )


@router.get("/jobs/{job_id}/_log")
def trainer_log_live(request: Request, session: SessionDep, user: PageUser, job_id: uuid.UUID) -> Response:
    """The log's last lines, refreshed while the job runs."""
    job = service.get_job(session, job_id, user=user)
    run = service.job_run(session, job)
    live = service.is_live(run)
    context = {"job": job, "log": run_logs.tail(run.id), "log_live": live}
    return render_live(request, "jobs/_log.html", context, live=live)


@router.get("/jobs/{job_id}/tensorboard.zip")
def tensorboard(request: Request, session: SessionDep, user: PageUser, job_id: uuid.UUID) -> Response:
    job = service.get_job(session, job_id, user=user)
    name = f"refinery-tensorboard-{job.id.hex[:8]}.zip"
    disposition = {"Content-Disposition": f'attachment; filename="{name}"'}
    return Response(service.tensorboard_zip(job), media_type="application/zip", headers=disposition)


@router.get("/jobs/{job_id}/adapter.zip")
def adapter(request: Request, session: SessionDep, user: PageUser, job_id: uuid.UUID) -> Response:
    job = service.get_job(session, job_id, user=user)
    name = f"refinery-adapter-{job.id.hex[:8]}.zip"
    return StreamingResponse(
        service.adapter_zip(session, job),
        media_type="application/zip",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )
