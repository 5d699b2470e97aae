"""Evaluation pages: start one from a job, the report (scores drawn, samples side by side), compare several."""

from __future__ import annotations

import json
import uuid
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import RedirectResponse, Response
from pydantic import ValidationError
from sqlalchemy.orm import Session

from app.basemodels import service as models
from app.core.deps import SessionDep, csrf_protect
from app.core.errors import InvalidInput, NotFound, RefineryError
from app.core.forms import FormDep, text_fields
from app.core.i18n import _
from app.core.ownership import referenced
from app.core.templating import render, render_live
from app.core.validation import describe_error, ticked_ids
from app.db.models import DatasetVersion, Evaluation, ModelStatus, Run, TrainingJob, User
from app.evaluation import evals, judges, service
from app.evaluation.evals import pass_threshold
from app.graders import library
from app.jobs import service as jobs
from app.runs import service as runs
from app.users.deps import PageUser

router = APIRouter(dependencies=[Depends(csrf_protect)], include_in_schema=False)
VARIANT_COLOURS = {"base": "#8a94a6", "few_shot": "#d9822b", "tuned": "#2f6fde"}


def _names(session: Session, evaluation: Evaluation) -> dict[str, Any]:
    """The evaluated job and data (their keys keep them there; lists preload them: service.LIST_LOADS)."""
    version = referenced(session, DatasetVersion, evaluation.dataset_version_id)
    return {
        "job": referenced(session, TrainingJob, evaluation.job_id),
        "version_label": jobs.version_label(session, version),
    }


def _judging(session: Session, evaluation: Evaluation) -> dict[str, Any]:
    """The judge card: every judgement with its run and agreement with the person's labels, and the verdicts
    of the latest finished one per sample."""
    labels = judges.labels_for(session, evaluation)
    rows: list[dict[str, Any]] = []
    verdicts: dict[str, dict[str, Any]] = {}
    live = False
    for judgement in judges.judgements_for(session, evaluation):
        run = session.get(Run, judgement.run_id) if judgement.run_id else None
        live = live or (run is not None and not run.status.is_final)
        found = judges.verdicts(judgement)
        if found and not verdicts:
            verdicts = found
        rows.append({"judgement": judgement, "run": run, "agreement": judges.agreement(found, labels)})
    return {
        "judges": judges.list_judges(session),
        "judgements": rows,
        "judging_live": live,
        "picks": labels,
        "verdicts": verdicts,
    }


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
        **_judging(session, evaluation),
    }


@router.post("/jobs/{job_id}/evaluations")
def start(request: Request, session: SessionDep, user: PageUser, sent: FormDep, job_id: uuid.UUID) -> Response:
    job = jobs.get_job(session, job_id, user=user)
    values = {k: v for k, v in text_fields(sent).items() if v != ""}
    try:
        version_id = uuid.UUID(values.pop("dataset_version_id", str(job.dataset_version_id or "")))
    except ValueError as exc:
        raise NotFound(_("No such dataset version.")) from exc
    _dataset, version = jobs.owned_version(session, version_id, user=user)
    values.pop("csrf_token", None)
    if values.get("judge_id") == "none":
        values.pop("judge_id")
    ticked = [v for v in sent.getlist("grader_ids") if isinstance(v, str) and v]
    try:
        options = service.configured({**values, "grader_ids": ticked})
    except ValidationError as exc:
        first = exc.errors()[0]
        raise InvalidInput(describe_error(dict(first)), field=str(first["loc"][0])) from exc
    evaluation = service.create_evaluation(session, user=user, job=job, version=version, options=options)
    return RedirectResponse(f"/evaluations/{evaluation.id}", status_code=303)


def _index(request: Request, session: Session, user: User, **extra: Any) -> Response:
    evaluations = service.list_evaluations(session, user=user)
    rows = [{"evaluation": e, "run": service.evaluation_run(session, e), **_names(session, e)} for e in evaluations]
    context = {
        "rows": rows,
        "graders": library.list_graders(session, user=user),
        "examples": GRADER_EXAMPLES,
        "placeholders": PLACEHOLDERS,
        "try_example": {"item": '{"reference": "Paris"}', "output_text": "Paris"},
        "form": {},
        **extra,
    }
    return render(request, "evaluations/index.html", context, status_code=422 if extra.get("error") else 200)


@router.get("/evaluations")
def index(request: Request, session: SessionDep, user: PageUser) -> Response:
    return _index(request, session, user)


# the templates the graders card explains (kept out of the translated sentence, which they would break)
PLACEHOLDERS = {
    "ref": "{{ item.reference }}",
    "field": "{{ item.<field> }}",
    "out": "{{ sample.output_text }}",
    "json": "{{ sample.output_json.<field> }}",
}

# starting points for the graders card's spec box (each a valid grader, filled in by a click)
GRADER_EXAMPLES: dict[str, dict[str, Any]] = {
    "string_check": {
        "type": "string_check",
        "name": "exact",
        "input": "{{ sample.output_text }}",
        "reference": "{{ item.reference }}",
        "operation": "eq",
    },
    "text_similarity": {
        "type": "text_similarity",
        "name": "close",
        "input": "{{ sample.output_text }}",
        "reference": "{{ item.reference }}",
        "evaluation_metric": "fuzzy_match",
        "pass_threshold": 0.8,
    },
    "python": {
        "type": "python",
        "name": "valid_json",
        "source": "import json\n\ndef grade(sample, item):\n    try:\n        json.loads(sample['output_text'])\n"
        "    except ValueError:\n        return 0.0\n    return 1.0\n",
    },
    "multi": {
        "type": "multi",
        "name": "both",
        "graders": {
            "exact": {
                "type": "string_check",
                "name": "exact",
                "input": "{{ sample.output_text }}",
                "reference": "{{ item.reference }}",
                "operation": "ilike",
            },
            "close": {
                "type": "text_similarity",
                "name": "close",
                "input": "{{ sample.output_text }}",
                "reference": "{{ item.reference }}",
                "evaluation_metric": "rouge_l",
            },
        },
        "calculate_output": "0.5 * exact + 0.5 * close",
    },
}


def _json_field(raw: str, field: str) -> Any:
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        raise InvalidInput(
            _("%(field)s is not valid JSON: %(error)s (line %(line)s).", field=field, error=exc.msg, line=exc.lineno),
            field=field,
        ) from None


@router.post("/graders")
def grader_create(request: Request, session: SessionDep, user: PageUser, sent: FormDep) -> Response:
    """The graders card's form: a name and the grader's JSON; on a mistake the page comes back with the form as
    it was and the error beside its field."""
    form = text_fields(sent)
    try:
        spec = _json_field(form.get("spec", ""), "spec")
        row = library.create_grader(session, user=user, name=form.get("name", ""), spec=spec)
    except RefineryError as exc:
        return _index(request, session, user, error=exc.message, error_field=exc.field, form=form)
    return RedirectResponse(f"/evaluations#grader-{row.id}", status_code=303)


@router.post("/graders/{grader_id}/delete")
def grader_delete(request: Request, session: SessionDep, user: PageUser, grader_id: uuid.UUID) -> Response:
    library.delete_grader(session, library.get_grader(session, grader_id, user=user))
    return RedirectResponse("/evaluations#graders", status_code=303)


@router.post("/graders/try")
def grader_try(request: Request, session: SessionDep, user: PageUser, sent: FormDep) -> Response:
    """ "Try it on one sample": a saved grader, or the JSON being written, on an item and an answer; the result
    (score, pass, each error's explanation) replaces the box's result area."""
    form = text_fields(sent)
    try:
        if form.get("grader_id"):
            try:
                grader_id = uuid.UUID(form["grader_id"])
            except ValueError:
                raise InvalidInput(_("No such grader."), field="grader_id") from None
            raw = library.get_grader(session, grader_id, user=user).spec
        else:
            raw = _json_field(form.get("spec", ""), "spec")
        item = _json_field(form.get("item", "") or "{}", "item")
        if not isinstance(item, dict):
            raise InvalidInput(_('The item must be a JSON object, such as {"reference": "Paris"}.'), field="item")
        grader = library.parse_grader(raw, session=session)
        result = library.try_grader(session, grader, output_text=form.get("output_text", ""), item=item)
    except RefineryError as exc:
        context = {"error": exc.message, "error_field": exc.field}
        return render(request, "evaluations/_grader_try.html", context, status_code=200)
    return render(request, "evaluations/_grader_try.html", {"result": result, "threshold": pass_threshold(grader)})


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
    return render_live(request, "evaluations/_live.html", context, live=context["live"])


@router.get("/evaluations/{evaluation_id}/_judging")
def judging_live(request: Request, session: SessionDep, user: PageUser, evaluation_id: uuid.UUID) -> Response:
    evaluation = service.get_evaluation(session, evaluation_id, user=user)
    context = {"evaluation": evaluation, **_judging(session, evaluation)}
    return render_live(request, "evaluations/_judging.html", context, live=context["judging_live"])


@router.post("/evaluations/{evaluation_id}/judgements")
def judge(request: Request, session: SessionDep, user: PageUser, sent: FormDep, evaluation_id: uuid.UUID) -> Response:
    evaluation = service.get_evaluation(session, evaluation_id, user=user)
    try:
        judge_id = uuid.UUID(str(sent.get("judge_id", "")))
    except ValueError as exc:
        raise InvalidInput(_("Pick a judge."), field="judge_id") from exc
    judges.start_judgement(session, user=user, evaluation=evaluation, judge=judges.get_judge(session, judge_id))
    return RedirectResponse(f"/evaluations/{evaluation.id}#judge", status_code=303)


@router.post("/evaluations/{evaluation_id}/labels")
def label(request: Request, session: SessionDep, user: PageUser, sent: FormDep, evaluation_id: uuid.UUID) -> Response:
    """Your pick for one sample; htmx swaps the sample's label buttons, a plain form goes back to the page."""
    evaluation = service.get_evaluation(session, evaluation_id, user=user)
    sample_id, choice = str(sent.get("sample_id", "")), str(sent.get("choice", ""))
    judges.set_label(session, user=user, evaluation=evaluation, sample_id=sample_id, choice=choice)
    if request.headers.get("hx-request") != "true":
        return RedirectResponse(f"/evaluations/{evaluation.id}#sample-{sample_id}", status_code=303)
    context = {"evaluation": evaluation, "s": {"id": sample_id}, "picks": judges.labels_for(session, evaluation)}
    return render(request, "evaluations/_label.html", context)


def _judges_page(request: Request, session: SessionDep, user: User, **extra: Any) -> Response:
    if not user.is_admin:
        raise NotFound(_("Not found."))
    ready = [m for m in models.list_models(session, user=user) if m.status == ModelStatus.ready]
    context = {"judges": judges.list_judges(session), "models": ready, "form": {}, **extra}
    return render(request, "settings/judges.html", context, status_code=422 if extra.get("error") else 200)


@router.get("/settings/judges")
def judges_page(request: Request, session: SessionDep, user: PageUser) -> Response:
    return _judges_page(request, session, user)


@router.post("/settings/judges")
def judges_create(request: Request, session: SessionDep, user: PageUser, sent: FormDep) -> Response:
    values = {k: v for k, v in text_fields(sent).items() if v.strip() and k != "csrf_token"}
    try:
        body = judges.JudgeCreate.model_validate(values)
        judges.create_judge(session, user=user, body=body)
    except ValidationError as exc:
        first = exc.errors()[0]
        return _judges_page(request, session, user, error=describe_error(dict(first)), form=values)
    except RefineryError as exc:
        if not user.is_admin:
            raise
        return _judges_page(request, session, user, error=exc.message, form=values)
    return RedirectResponse("/settings/judges", status_code=303)


@router.post("/settings/judges/{judge_id}/delete")
def judges_delete(request: Request, session: SessionDep, user: PageUser, judge_id: uuid.UUID) -> Response:
    if not user.is_admin:
        raise NotFound(_("Not found."))
    judges.delete_judge(session, user=user, judge_id=judge_id)
    return RedirectResponse("/settings/judges", status_code=303)


def _eval_rows(session: Session, user: User) -> list[dict[str, Any]]:
    found = []
    for row in evals.list_evals(session, user=user):
        runs_of = [
            {"row": r, "status": evals.run_status(runs.optional_run(session, r.run_id))}
            for r in evals.list_runs(session, row)
        ]
        found.append({"eval": row, "runs": runs_of})
    return found


@router.get("/evals")
def evals_index(request: Request, session: SessionDep, user: PageUser) -> Response:
    """The evals made through /v1/evals, each with its runs."""
    return render(request, "evals/index.html", {"rows": _eval_rows(session, user)})


def _eval_run_context(session: Session, user: User, eval_id: uuid.UUID, run_id: uuid.UUID) -> dict[str, Any]:
    definition = evals.get_eval(session, eval_id, user=user)
    eval_run = evals.get_run(session, definition, run_id)
    run = runs.required_run(session, eval_run.run_id)
    summary = eval_run.summary or {}
    counts = summary.get("result_counts") or {}
    per = [
        {**entry, "share": entry["passed"] / max(1, entry["passed"] + entry["failed"])}
        for entry in summary.get("per_testing_criteria_results") or []
    ]
    items = evals.output_items(eval_run)
    return {
        "definition": definition,
        "eval_run": eval_run,
        "run": run,
        "live": not run.status.is_final,
        "counts": counts,
        "per": per,
        "items": items[:ITEMS_SHOWN],
        "more_items": max(0, len(items) - ITEMS_SHOWN),
    }


ITEMS_SHOWN = 200


@router.get("/evals/{eval_id}/runs/{eval_run_id}")
def eval_run_report(
    request: Request, session: SessionDep, user: PageUser, eval_id: uuid.UUID, eval_run_id: uuid.UUID
) -> Response:
    """An eval run's report (its report_url): the counts, each criterion's pass rate, every item's grades."""
    return render(request, "evals/run.html", _eval_run_context(session, user, eval_id, eval_run_id))


@router.get("/evals/{eval_id}/runs/{eval_run_id}/_live")
def eval_run_live(
    request: Request, session: SessionDep, user: PageUser, eval_id: uuid.UUID, eval_run_id: uuid.UUID
) -> Response:
    context = _eval_run_context(session, user, eval_id, eval_run_id)
    return render_live(request, "evals/_live.html", context, live=context["live"])
