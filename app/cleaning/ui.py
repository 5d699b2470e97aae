"""Cleaning pages: the recipe builder on a dataset version, and the review page of a cleaning run (counts per
step, decisions with their evidence, overrides one by one or per filter, commit)."""

from __future__ import annotations

import difflib
import re
import uuid
from collections.abc import Mapping
from typing import Any, Literal, get_args, get_origin
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Request
from fastapi.responses import RedirectResponse, Response
from markupsafe import Markup, escape
from sqlalchemy.orm import Session
from starlette.datastructures import FormData

from app.cleaning import service
from app.cleaning.labels import CRITERIA_LABELS, OPTION_LABELS, PARAM_LABELS, REASON_LABELS
from app.cleaning.recipe import DEFAULT_RECIPE, OP_LABELS, PARAMS
from app.core.deps import SessionDep, csrf_protect
from app.core.errors import Conflict, NotFound, RefineryError
from app.core.forms import FormDep
from app.core.i18n import _
from app.core.ownership import referenced
from app.core.templating import render, render_live
from app.datasets import service as datasets
from app.db.models import Cleaning, Dataset, DatasetVersion, RunStatus, User
from app.evaluation.judges import list_judges
from app.users.deps import PageUser

router = APIRouter(dependencies=[Depends(csrf_protect)], include_in_schema=False)
TOKEN = re.compile(r"\s+|\w+|[^\w\s]", re.UNICODE)


# --- the recipe builder -----------------------------------------------------------------------------------


def _kind(annotation: Any) -> tuple[str, list[Any]]:
    """How a parameter of this type is edited, and its choices when it has some."""
    if annotation is bool:
        return "bool", []
    if annotation in (int, float):
        return "number", []
    if get_origin(annotation) is Literal:
        return "select", list(get_args(annotation))
    if get_origin(annotation) is list:
        inner = get_args(annotation)[0]
        return ("multi", list(get_args(inner))) if get_origin(inner) is Literal else ("lines", [])
    return "text", []


def _widget(op: str, name: str, value: Any) -> dict[str, Any]:
    """One parameter ready to draw: its kind, choices and bounds, read from the operation's model."""
    info = PARAMS[op].model_fields[name]
    kind, options = _kind(info.annotation)
    widget: dict[str, Any] = {"name": name, "value": value, "description": info.description or ""}
    widget |= {"kind": kind, "options": options}
    if kind == "number":
        widget["step"] = "1" if info.annotation is int else "any"
        for bound in info.metadata:
            for attr, key in (("ge", "min"), ("le", "max")):
                if getattr(bound, attr, None) is not None:
                    widget[key] = getattr(bound, attr)
    return widget


def _editable(steps: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Steps with every parameter (defaults filled in where the step leaves one out) ready to draw."""
    out = []
    for step in steps:
        op = step["op"]
        defaults = PARAMS[op]().model_dump(mode="json")
        values = {**defaults, **(step.get("params") or {})}
        out.append({"op": op, "widgets": [_widget(op, name, values[name]) for name in PARAMS[op].model_fields]})
    return out


def _steps_from_form(form: FormData) -> list[dict[str, Any]]:
    """The recipe as the form holds it; values stay as typed so a bad one is shown back with its error."""
    steps = []
    for index in range(min(_int(form.get("steps")), 30)):
        op = str(form.get(f"s{index}.op", ""))
        if op not in PARAMS:
            continue
        params: dict[str, Any] = {}
        for name, info in PARAMS[op].model_fields.items():
            key = f"s{index}.{name}"
            kind, _options = _kind(info.annotation)
            if kind == "bool":
                params[name] = form.get(key) == "on"
            elif kind == "multi":
                params[name] = [str(v) for v in form.getlist(key)]
            elif kind == "lines":
                params[name] = [line.strip() for line in str(form.get(key, "")).splitlines() if line.strip()]
            elif form.get(key) not in (None, ""):
                params[name] = str(form.get(key))
        steps.append({"op": op, "params": params})
    return steps


def _int(raw: Any, default: int = 0) -> int:
    try:
        return max(0, int(str(raw)))
    except ValueError:
        return default


def _uuid(raw: str, message: str) -> uuid.UUID:
    try:
        return uuid.UUID(raw)
    except ValueError as exc:
        raise NotFound(message) from exc


def _version(session: Session, dataset: Dataset, raw: str | None) -> DatasetVersion:
    """The version asked for, else the newest; a dataset still without versions cannot be cleaned."""
    if raw:
        return datasets.get_version(session, dataset, _uuid(raw, _("No such dataset version.")))
    versions = datasets.versions(session, dataset)
    if not versions:
        raise Conflict(_("This dataset has no version yet; clean it once its upload is validated and imported."))
    return versions[0]


def _builder(
    request: Request,
    session: Session,
    user: User,
    dataset: Dataset,
    version: DatasetVersion,
    steps: list[dict[str, Any]],
    **extra: Any,
) -> Response:
    context = {
        "dataset": dataset,
        "version": version,
        "versions": datasets.versions(session, dataset),
        "steps": _editable(steps),
        "ops": {op: OP_LABELS[op] for op in PARAMS},
        "recipes": service.list_recipes(session, user=user),
        "eval_versions": [
            (d.name, v) for d in datasets.list_datasets(session, user=user) for v in datasets.versions(session, d)
        ],
        "param_labels": PARAM_LABELS,
        "option_labels": OPTION_LABELS,
        "judges": list_judges(session),
    }
    status = extra.pop("status_code", 200)
    return render(request, "cleaning/builder.html", context | extra, status_code=status)


@router.get("/datasets/{dataset_id}/clean")
def builder_page(request: Request, session: SessionDep, user: PageUser, dataset_id: uuid.UUID) -> Response:
    dataset = datasets.get_dataset(session, dataset_id, user=user)
    version = _version(session, dataset, request.query_params.get("version"))
    steps, name = DEFAULT_RECIPE, ""
    recipe_id = request.query_params.get("recipe")
    if recipe_id:
        recipe = service.get_recipe(session, _uuid(recipe_id, _("No such recipe.")), user=user)
        steps, name = recipe.steps, recipe.name
    return _builder(request, session, user, dataset, version, steps, recipe_name=name)


@router.post("/datasets/{dataset_id}/clean")
def builder_action(
    request: Request, session: SessionDep, user: PageUser, form: FormDep, dataset_id: uuid.UUID
) -> Response:
    """Add, move or remove a step, save the recipe, or run it; the form carries the whole recipe."""
    dataset = datasets.get_dataset(session, dataset_id, user=user)
    version = _version(session, dataset, str(form.get("version_id", "")))
    steps = _steps_from_form(form)
    action = str(form.get("action", ""))
    verb, _sep, where = action.partition(":")
    index = _int(where)
    name = str(form.get("recipe_name", "")).strip()
    if verb == "add" and form.get("add_op") in PARAMS and len(steps) < 30:
        steps.append({"op": str(form.get("add_op")), "params": {}})
    elif verb in ("up", "down") and 0 <= index < len(steps):
        other = index - 1 if verb == "up" else index + 1
        if 0 <= other < len(steps):
            steps[index], steps[other] = steps[other], steps[index]
    elif verb == "remove" and 0 <= index < len(steps):
        steps.pop(index)
    elif verb in ("save", "run"):
        try:
            if verb == "save":
                service.save_recipe(session, user=user, name=name, steps=steps)
                return _builder(request, session, user, dataset, version, steps, recipe_name=name, saved=name)
            recipe = next((r for r in service.list_recipes(session, user=user) if r.name == name), None)
            cleaning = service.start_cleaning(
                session, user=user, version_id=version.id, steps=steps, recipe_id=recipe.id if recipe else None
            )
        except RefineryError as exc:
            return _builder(
                request, session, user, dataset, version, steps, recipe_name=name, error=exc, status_code=422
            )
        target = f"/cleanings/{cleaning.id}"
        if request.headers.get("hx-request") == "true":
            return Response(status_code=204, headers={"HX-Redirect": target})
        return RedirectResponse(target, status_code=303)
    return _builder(request, session, user, dataset, version, steps, recipe_name=name)


@router.post("/cleaning/recipes/{recipe_id}/delete")
def delete_recipe(request: Request, session: SessionDep, user: PageUser, recipe_id: uuid.UUID) -> Response:
    service.delete_recipe(session, service.get_recipe(session, recipe_id, user=user))
    back = request.headers.get("referer", "")
    return RedirectResponse(back if back.startswith(str(request.base_url)) else "/datasets", status_code=303)


# --- the review page --------------------------------------------------------------------------------------


def diff_marks(before: str, after: str) -> tuple[Markup, Markup]:
    """Both texts escaped, with what the step removed in <del> and what it put in its place in <ins>."""
    old, new = TOKEN.findall(before), TOKEN.findall(after)
    left: list[str] = []
    right: list[str] = []
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(None, old, new, autojunk=False).get_opcodes():
        a, b = escape("".join(old[i1:i2])), escape("".join(new[j1:j2]))
        if tag == "equal":
            left.append(a)
            right.append(b)
            continue
        if a:
            left.append(Markup("<del>%s</del>") % a)
        if b:
            right.append(Markup("<ins>%s</ins>") % b)
    return Markup("").join(left), Markup("").join(right)


def mark(text: str, needles: list[str]) -> Markup:
    """The text escaped, every occurrence of the needles in <mark>."""
    spans: list[tuple[int, int]] = []
    for needle in {n for n in needles if n}:
        spans.extend((m.start(), m.end()) for m in re.finditer(re.escape(needle), text))
    out: list[Markup] = []
    at = 0
    for start, end in sorted(spans):
        if start < at:
            continue
        out.append(escape(text[at:start]))
        out.append(Markup("<mark>%s</mark>") % text[start:end])
        at = end
    out.append(escape(text[at:]))
    return Markup("").join(out)


def _filters(values: Mapping[str, Any]) -> dict[str, Any]:
    """The decision filter from a query string or a form: step, reason, drops or changes, a cluster."""
    step = str(values.get("step", ""))
    return {
        "step": int(step) if step.isdigit() and int(step) < 30 else None,
        "reason": str(values.get("reason", ""))[:40],
        "action": str(values.get("action", "")) if values.get("action") in ("drop", "modify") else "",
        "duplicate_of": str(values.get("duplicate_of", ""))[:64],
    }


def _query(filters: dict[str, Any], **more: Any) -> str:
    values = {k: v for k, v in (filters | more).items() if v not in (None, "")}
    return urlencode(values)


def _decision_context(session: Session, cleaning: Cleaning, filters: dict[str, Any]) -> dict[str, Any]:
    """What drawing a decision needs: its overrides' counts, whether it is committed, labels and markers."""
    committed = session.get(DatasetVersion, cleaning.committed_version_id) if cleaning.committed_version_id else None
    return {
        "cleaning": cleaning,
        "filters": filters,
        "query": lambda **more: _query(filters, **more),
        "counts": service.override_counts(session, cleaning),
        "committed": committed,
        "commit_run": service.commit_run(session, cleaning),
        "locked": committed is not None or service.committing(session, cleaning),
        "ops": OP_LABELS,
        "reasons": REASON_LABELS,
        "option_labels": OPTION_LABELS,
        "criteria": CRITERIA_LABELS,
        "diff_marks": diff_marks,
        "mark": mark,
    }


def _review_context(request: Request, session: Session, cleaning: Cleaning) -> dict[str, Any]:
    run = service.cleaning_run(session, cleaning)
    version = referenced(session, DatasetVersion, cleaning.version_id)
    filters = _filters(request.query_params)
    page = max(1, _int(request.query_params.get("page"), 1))
    rows: list[service.DecisionRow] = []
    total = 0
    if run.status == RunStatus.succeeded:
        rows, total = service.page_decisions(session, cleaning, page=page, **filters)
    return _decision_context(session, cleaning, filters) | {
        "run": run,
        "version": version,
        "dataset": referenced(session, Dataset, version.dataset_id),
        "summary": cleaning.summary,
        "rows": rows,
        "total": total,
        "page": page,
        "pages": max(1, -(-total // service.PAGE_SIZE)),
    }


@router.get("/cleanings/{cleaning_id}")
def review_page(request: Request, session: SessionDep, user: PageUser, cleaning_id: uuid.UUID) -> Response:
    cleaning = service.get_cleaning(session, cleaning_id, user=user)
    return render(request, "cleaning/review.html", _review_context(request, session, cleaning))


@router.get("/cleanings/{cleaning_id}/_status")
def review_status(request: Request, session: SessionDep, user: PageUser, cleaning_id: uuid.UUID) -> Response:
    cleaning = service.get_cleaning(session, cleaning_id, user=user)
    run = service.cleaning_run(session, cleaning)
    context = {"cleaning": cleaning, "run": run}
    return render_live(request, "cleaning/_status.html", context, live=not run.status.is_final)


@router.post("/cleanings/{cleaning_id}/override")
def override_one(
    request: Request, session: SessionDep, user: PageUser, form: FormDep, cleaning_id: uuid.UUID
) -> Response:
    """One record's verdict; htmx gets the decision back redrawn, a plain form the page."""
    cleaning = service.get_cleaning(session, cleaning_id, user=user)
    record_id, action = str(form.get("record_id", ""))[:64], str(form.get("to", ""))
    service.set_overrides(session, cleaning, user=user, items=[(record_id, action)])
    if request.headers.get("hx-request") != "true":
        return RedirectResponse(f"/cleanings/{cleaning.id}", status_code=303)
    step = _int(form.get("step"))
    rows = [r for r in service.record_decisions(session, cleaning, record_id) if r.step == step]
    context = _decision_context(session, cleaning, _filters(request.query_params))
    context |= {"d": rows[0] if rows else None, "oob": True}
    return render(request, "cleaning/_decision.html", context)


@router.post("/cleanings/{cleaning_id}/override-filter")
def override_filter(
    request: Request, session: SessionDep, user: PageUser, form: FormDep, cleaning_id: uuid.UUID
) -> Response:
    """One verdict for every decision the filter shows."""
    cleaning = service.get_cleaning(session, cleaning_id, user=user)
    filters = _filters(form)
    service.override_filter(session, cleaning, user=user, to=str(form.get("to", "")), **filters)
    return RedirectResponse(f"/cleanings/{cleaning.id}?{_query(filters)}#decisions", status_code=303)


@router.post("/cleanings/{cleaning_id}/commit")
def commit(request: Request, session: SessionDep, user: PageUser, cleaning_id: uuid.UUID) -> Response:
    cleaning = service.get_cleaning(session, cleaning_id, user=user)
    service.start_commit(session, cleaning, user=user)
    return RedirectResponse(f"/cleanings/{cleaning.id}#commit-card", status_code=303)


@router.get("/cleanings/{cleaning_id}/_commit")
def commit_status(request: Request, session: SessionDep, user: PageUser, cleaning_id: uuid.UUID) -> Response:
    cleaning = service.get_cleaning(session, cleaning_id, user=user)
    run = service.commit_run(session, cleaning)
    if run is None:
        raise NotFound(_("This cleaning has not been committed."))
    context = {"cleaning": cleaning, "run": run}
    return render_live(request, "cleaning/_commit.html", context, live=not run.status.is_final)
