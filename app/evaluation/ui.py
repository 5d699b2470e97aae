"""Evaluation pages: start one from a job, the report (scores drawn, samples side by side), compare several."""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import RedirectResponse, Response
from pydantic import ValidationError
from sqlalchemy.orm import Session

from app.core.deps import PageUser, SessionDep, csrf_protect
from app.core.errors import InvalidInput, NotFound
from app.core.i18n import _
from app.core.templating import render
from app.core.validation import describe_error, ticked_ids
from app.db.models import Dataset, DatasetVersion, Evaluation, TrainingJob
from app.evaluation import service
from app.jobs import service as jobs

router = APIRouter(dependencies=[Depends(csrf_protect)], include_in_schema=False)
VARIANT_COLOURS = {"base": "#8a94a6", "few_shot": "#d9822b", "tuned": "#2f6fde"}


def _names(session: Session, evaluation: Evaluation) -> dict[str, Any]:
    job = session.get(TrainingJob, evaluation.job_id)
    version = session.get(DatasetVersion, evaluation.dataset_version_id)
    dataset = session.get(Dataset, version.dataset_id) if version else None
    return {"job": job, "version_label": f"{dataset.name if dataset else '?'} v{version.number if version else '?'}"}


def _context(session: Session, evaluation: Evaluation, sort: str) -> dict[str, Any]:
    run = service.evaluation_run(session, evaluation)
    rows = service.samples(evaluation, sort=sort)
    ranked = service.samples(evaluation, sort="diff")
    return {
        "evaluation": evaluation,
        "run": run,
        "live": not run.status.is_final,
        "summary": evaluation.summary,
        "verdict": service.verdict(evaluation.summary) if evaluation.summary else "",
        "samples": rows,
        "best": [r for r in ranked[:3] if r["diff"] > 0],
        "worst": [r for r in reversed(ranked[-3:]) if r["diff"] < 0],
        "sort": sort if sort in service.SORTS else "diff",
        "colours": VARIANT_COLOURS,
        **_names(session, evaluation),
    }


@router.post("/jobs/{job_id}/evaluations")
async def start(request: Request, session: SessionDep, user: PageUser, job_id: uuid.UUID) -> Response:
    job = jobs.get_job(session, job_id, user=user)
    form = await request.form(max_files=0, max_fields=20)
    values = {k: v for k, v in form.items() if isinstance(v, str) and v != ""}
    try:
        version_id = uuid.UUID(values.pop("dataset_version_id", str(job.dataset_version_id)))
    except ValueError as exc:
        raise NotFound(_("No such dataset version.")) from exc
    _dataset, version = jobs.owned_version(session, version_id, user=user)
    values.pop("csrf_token", None)
    try:
        options = service.EvaluationOptions.model_validate(values)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise InvalidInput(describe_error(dict(first)), field=str(first["loc"][0])) from exc
    evaluation = service.create_evaluation(session, user=user, job=job, version=version, options=options)
    return RedirectResponse(f"/evaluations/{evaluation.id}", status_code=303)


@router.get("/evaluations")
def index(request: Request, session: SessionDep, user: PageUser) -> Response:
    evaluations = service.list_evaluations(session, user=user)
    rows = [{"evaluation": e, "run": service.evaluation_run(session, e), **_names(session, e)} for e in evaluations]
    return render(request, "evaluations/index.html", {"rows": rows})


@router.get("/evaluations/compare")
def compare(request: Request, session: SessionDep, user: PageUser) -> Response:
    ids = ticked_ids(
        request.query_params.getlist("id"),
        most=8,
        unknown=_("No such evaluation."),
        count=_("Tick two to eight evaluations to compare."),
    )
    evaluations = [service.get_evaluation(session, i, user=user) for i in ids]
    columns = [{"evaluation": e, **_names(session, e)} for e in evaluations]
    return render(request, "evaluations/compare.html", {"columns": columns})


@router.get("/evaluations/{evaluation_id}")
def report(request: Request, session: SessionDep, user: PageUser, evaluation_id: uuid.UUID) -> Response:
    evaluation = service.get_evaluation(session, evaluation_id, user=user)
    sort = request.query_params.get("sort", "diff")
    return render(request, "evaluations/detail.html", _context(session, evaluation, sort))


@router.get("/evaluations/{evaluation_id}/_live")
def live(request: Request, session: SessionDep, user: PageUser, evaluation_id: uuid.UUID) -> Response:
    evaluation = service.get_evaluation(session, evaluation_id, user=user)
    context = _context(session, evaluation, "diff")
    if not context["live"]:
        return Response(status_code=204, headers={"HX-Refresh": "true"})
    return render(request, "evaluations/_live.html", context)
