"""The Traffic page: stored completions browsed, searched, reviewed (good, bad, corrected), and turned into a
dataset with Make dataset."""

from __future__ import annotations

import uuid
from typing import Any, Literal
from urllib.parse import parse_qsl, urlencode

from fastapi import APIRouter, Depends, Request
from fastapi.responses import RedirectResponse, Response

from app.core.deps import SessionDep, csrf_protect
from app.core.errors import InvalidInput
from app.core.forms import FormDep
from app.core.i18n import _
from app.core.templating import render
from app.datasets import service as datasets
from app.evaluation import judges
from app.traffic import distill, service
from app.users.deps import PageUser

router = APIRouter(dependencies=[Depends(csrf_protect)], include_in_schema=False)
PAGE = 50


def _filter(values: Any) -> service.Filter:
    return service.Filter(
        model=str(values.get("model", ""))[:300],
        q=str(values.get("q", ""))[:200],
        metadata=str(values.get("metadata", ""))[:600],
        review=str(values.get("review", "any")) or "any",
        unused=values.get("unused") in ("1", "on", "true"),
        dataset=str(values.get("dataset", ""))[:40],
    ).check()


def _query(where: service.Filter) -> str:
    fields = {
        "model": where.model,
        "q": where.q,
        "metadata": where.metadata,
        "review": where.review,
        "dataset": where.dataset,
    }
    return urlencode({k: v for k, v in fields.items() if v and v != "any"} | ({"unused": "1"} if where.unused else {}))


@router.get("/traffic")
def index(request: Request, session: SessionDep, user: PageUser) -> Response:
    where = _filter(request.query_params)
    rows = service.select_rows(session, user, where, limit=PAGE + 1)
    context = {
        "rows": rows[:PAGE],
        "more": len(rows) > PAGE,
        "where": where,
        "query": _query(where),
        "models": service.models_served(session, user),
        "reviews": service.REVIEWS,
        "metadata_example": "team=support",
        "teachers": judges.list_judges(session),
        "versions": [
            (dataset, version)
            for dataset in datasets.list_datasets(session, user=user)
            for version in datasets.versions(session, dataset)
        ],
        "distillations": distill.recent(session, user=user),
    }
    return render(request, "traffic/index.html", context)


@router.post("/traffic/distill")
def start_distillation(request: Request, session: SessionDep, user: PageUser, form: FormDep) -> Response:
    try:
        judge_id, version_id = uuid.UUID(str(form.get("judge_id"))), uuid.UUID(str(form.get("version_id")))
        limit, max_tokens = int(str(form.get("limit") or 200)), int(str(form.get("max_tokens") or 512))
    except ValueError as exc:
        raise InvalidInput(_("Choose a teacher and a dataset version, and give the numbers as numbers.")) from exc
    distill.start(session, user=user, judge_id=judge_id, version_id=version_id, limit=limit, max_tokens=max_tokens)
    return RedirectResponse("/traffic#distill", status_code=303)


@router.post("/traffic/{completion_id}/review")
def review(request: Request, session: SessionDep, user: PageUser, form: FormDep, completion_id: str) -> Response:
    rating = form.get("rating")
    correction = form.get("correction")
    service.review(
        session,
        user,
        completion_id,
        rating=str(rating) if rating is not None else None,
        correction=str(correction) if correction is not None else None,
    )
    back = _query(_filter(dict(parse_qsl(str(form.get("back", ""))))))  # the page's filter, rebuilt from its parts
    anchor = "".join(c for c in completion_id if c.isalnum() or c in "-_")[:60]
    return RedirectResponse(f"/traffic?{back}#{anchor}", status_code=303)


@router.post("/traffic/dataset")
def make_dataset(request: Request, session: SessionDep, user: PageUser, form: FormDep) -> Response:
    kind: Literal["sft", "preference"] = "preference" if form.get("kind") == "preference" else "sft"
    dataset, _count = service.make_dataset(session, user, _filter(form), kind=kind, name=str(form.get("name", "")))
    return RedirectResponse(f"/datasets/{dataset.id}", status_code=303)
