"""Dataset pages: list and upload, validation report and decisions, statistics, preview, template view."""

from __future__ import annotations

import json
import uuid
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import RedirectResponse, Response
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.basemodels import service as models
from app.cleaning import service as cleaning
from app.core.deps import SessionDep, commit_now, csrf_protect
from app.core.errors import NotFound, RefineryError
from app.core.forms import FormDep, text_fields
from app.core.i18n import _
from app.core.templating import render, render_live
from app.datasets import records, service
from app.datasets.formats import FORMATS
from app.datasets.reading import FILE_TYPES
from app.datasets.storage import artifact_path
from app.datasets.template import TemplateRenderError, record_text, renderer_for
from app.datasets.upload import ReceivedUpload, parse_options
from app.db.models import Dataset, DatasetStatus, ModelStatus, StoredCompletion, User
from app.users.deps import PageUser

router = APIRouter(dependencies=[Depends(csrf_protect)], include_in_schema=False)


def _ready_models(session: Session, user: User) -> list[Any]:
    return [m for m in models.list_models(session, user=user) if m.status == ModelStatus.ready]


@router.get("/datasets")
def datasets_page(request: Request, session: SessionDep, user: PageUser) -> Response:
    return render(
        request,
        "datasets/index.html",
        {
            "datasets": service.list_datasets(session, user=user),
            "models": _ready_models(session, user),
            "formats": FORMATS,
            "file_types": FILE_TYPES,
        },
    )


def _detail_context(request: Request, session: Session, dataset: Dataset, user: User) -> dict[str, Any]:
    versions = service.versions(session, dataset)
    latest = versions[0] if versions else None
    query = request.query_params.get("q", "")[:200]
    split = request.query_params.get("split", "")
    page = _int(request.query_params.get("page"), 1)
    issue_page = _int(request.query_params.get("issues_page"), 1)
    rows, total = records.page_records(latest, page=page, query=query, split=split) if latest else ([], 0)
    issues: list[records.IssueRow] = []
    issue_total = 0
    if dataset.report and dataset.report.get("invalid_lines"):
        issues, issue_total = records.page_issues(service.staged_records_key(dataset), page=issue_page)
    return {
        "dataset": dataset,
        "upload": service.get_upload(session, dataset),
        "split_files": service.split_uploads(session, dataset),
        "versions": versions,
        "latest": latest,
        "run": service.validation_run(session, dataset),
        "rows": rows,
        "total": total,
        "page": page,
        "pages": max(1, -(-total // records.PAGE_SIZE)),
        "query": query,
        "split": split,
        "issues": issues,
        "issue_total": issue_total,
        "issue_page": issue_page,
        "issue_pages": max(1, -(-issue_total // 50)),
        "formats": FORMATS,
        "file_types": FILE_TYPES,
        "traffic_count": session.scalar(  # made on the Traffic page: the answers it came from
            select(func.count()).select_from(StoredCompletion).where(StoredCompletion.dataset_id == dataset.id)
        ),
        "models": _ready_models(session, user),
        "histogram": json.dumps(_histogram(latest.stats if latest else {})),
        "cleanings": [
            (c, cleaning.cleaning_run(session, c)) for c in cleaning.dataset_cleanings(session, dataset, user=user)
        ],
        "version_numbers": {v.id: v.number for v in versions},
    }


def _int(raw: str | None, default: int) -> int:
    try:
        return max(1, int(raw or default))
    except ValueError:
        return default


def _histogram(stats: dict[str, Any]) -> dict[str, Any]:
    bins = list(((stats.get("tokens") or {}).get("bins") or {}).items())
    while bins and not bins[-1][1]:  # trailing empty bins only waste width
        bins.pop()
    labels = [f"≤{edge}" for edge, _count in bins]
    if bins and bins[-1][0] == "65536":
        labels[-1] = ">32768"
    return {
        "labels": labels,
        "counts": [count for _edge, count in bins],
        "x_label": _("tokens per record"),
        "y_label": _("records"),
    }


@router.get("/datasets/{dataset_id}")
def dataset_detail(request: Request, session: SessionDep, user: PageUser, dataset_id: uuid.UUID) -> Response:
    dataset = service.get_dataset(session, dataset_id, user=user)
    return render(request, "datasets/detail.html", _detail_context(request, session, dataset, user))


@router.get("/datasets/{dataset_id}/_status")
def dataset_status(request: Request, session: SessionDep, user: PageUser, dataset_id: uuid.UUID) -> Response:
    dataset = service.get_dataset(session, dataset_id, user=user)
    context = {"dataset": dataset, "run": service.validation_run(session, dataset)}
    return render_live(request, "datasets/_status.html", context, live=dataset.status == DatasetStatus.validating)


@router.post("/datasets/{dataset_id}/import")
def import_valid(request: Request, session: SessionDep, user: PageUser, dataset_id: uuid.UUID) -> Response:
    dataset = service.get_dataset(session, dataset_id, user=user)
    service.import_valid(session, dataset)
    return RedirectResponse(f"/datasets/{dataset.id}", status_code=303)


@router.post("/datasets/{dataset_id}/validate")
def revalidate(request: Request, session: SessionDep, user: PageUser, sent: FormDep, dataset_id: uuid.UUID) -> Response:
    dataset = service.get_dataset(session, dataset_id, user=user)
    fields = text_fields(sent)
    try:
        options = parse_options(fields)
        service.revalidate(
            session,
            dataset,
            user=user,
            record_format=options.get("record_format"),
            file_type=options.get("file_type"),
            ratios=options.get("ratios"),
            seed=options.get("seed"),
            mapping=options.get("mapping"),
            model_id=options.get("model_id"),
            text_split=options.get("text_split"),
        )
    except RefineryError as exc:
        context = _detail_context(request, session, dataset, user) | {"options_error": exc.message}
        return render(request, "datasets/detail.html", context, status_code=exc.status_code)
    return RedirectResponse(f"/datasets/{dataset.id}", status_code=303)


@router.post("/datasets/{dataset_id}/upload")
def reupload(
    request: Request, session: SessionDep, user: PageUser, received: ReceivedUpload, dataset_id: uuid.UUID
) -> Response:
    dataset = service.get_dataset(session, dataset_id, user=user)
    service.replace_upload(session, dataset, user=user, stored=received.stored, filename=received.filename)
    commit_now(session)
    return RedirectResponse(f"/datasets/{dataset.id}", status_code=303)


@router.get("/datasets/{dataset_id}/versions/{version_id}/records/{record_id}")
def record_view(
    request: Request, session: SessionDep, user: PageUser, dataset_id: uuid.UUID, version_id: uuid.UUID, record_id: str
) -> Response:
    dataset = service.get_dataset(session, dataset_id, user=user)
    version = service.get_version(session, dataset, version_id)
    row = records.get_record(version, record_id[:50])
    if row is None:
        raise NotFound(_("No such record."))
    model = None
    model_id = request.query_params.get("model") or (version.options or {}).get("model_id")
    ready = _ready_models(session, user)
    if model_id:
        model = next((m for m in ready if str(m.id) == model_id), None)
    model = model or (ready[0] if ready else None)
    conversations: list[list[Any]] = []
    error = None
    if model is not None and model.storage_key:
        renderer = renderer_for(artifact_path(model.storage_key), model.chat_template)
        if renderer is None:
            error = _("This model has no chat template.")
        else:
            try:
                conversations = [
                    renderer.tokens(messages, tools=row.data.get("tools"))
                    for messages in record_text(row.kind, row.data)
                ]
            except TemplateRenderError as exc:
                error = _("The chat template could not render this record: %(msg)s", msg=str(exc))
    return render(
        request,
        "datasets/record.html",
        {
            "dataset": dataset,
            "version": version,
            "row": row,
            "model": model,
            "models": ready,
            "conversations": conversations,
            "error": error,
        },
    )
