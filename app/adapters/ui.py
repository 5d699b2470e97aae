"""Adapter pages: the registry (filterable by tag) and one adapter with its lineage."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Depends, Request
from fastapi.responses import FileResponse, RedirectResponse, Response, StreamingResponse

from app.adapters import exports, service, upload
from app.basemodels import service as models
from app.core.deps import SessionDep, commit_now, csrf_protect
from app.core.errors import InvalidInput, RefineryError
from app.core.forms import FormDep
from app.core.i18n import _
from app.core.templating import render, render_live
from app.datasets.storage import remove_tree
from app.db.models import ModelStatus
from app.deployments import service as deployments
from app.evaluation.service import verdict
from app.users.deps import PageUser

router = APIRouter(dependencies=[Depends(csrf_protect)], include_in_schema=False)


def _index_context(session: SessionDep, user: PageUser, tag: str = "") -> dict[str, object]:
    pending = upload.pending_uploads(session, user=user)
    return {
        "rows": service.list_adapters(session, user=user, tag=tag),
        "tags": service.all_tags(session, user=user),
        "tag": tag,
        "pending": pending,
        "pending_live": any(not run.status.is_final for _job, run in pending),
        "models": [m for m in models.list_models(session, user=user) if m.status == ModelStatus.ready],
    }


@router.get("/adapters")
def index(request: Request, session: SessionDep, user: PageUser) -> Response:
    context = _index_context(session, user, request.query_params.get("tag", ""))
    return render(request, "adapters/index.html", context)


@router.post("/adapters/upload")
def upload_adapter(request: Request, session: SessionDep, user: PageUser, form: upload.AdapterForm) -> Response:
    try:
        job = upload.upload_from_form(form, session, user=user)
    except RefineryError as exc:
        session.rollback()
        context = {**_index_context(session, user), "upload_error": exc.message}
        return render(request, "adapters/index.html", context, status_code=exc.status_code)
    commit_now(session, undo=lambda: remove_tree(job.storage_key))
    return RedirectResponse("/adapters#uploads", status_code=303)


@router.get("/adapters/_uploads")
def uploads_live(request: Request, session: SessionDep, user: PageUser) -> Response:
    context = _index_context(session, user)
    return render_live(request, "adapters/_uploads.html", context, live=bool(context["pending_live"]))


@router.get("/adapters/{job_id}")
def detail(request: Request, session: SessionDep, user: PageUser, job_id: uuid.UUID) -> Response:
    row = service.get_adapter(session, job_id, user=user)
    context = {
        **_merge_context(session, row),
        **_gguf_context(session, row),
        "dependents": service.dependents(session, row, user=user),
        "lineage": service.lineage(session, row, user=user),
        "deployed": deployments.serving(session, user, f"job-{row.job.id}"),
        "verdict": verdict(row.evaluation.summary) if row.evaluation and row.evaluation.summary else "",
    }
    return render(request, "adapters/detail.html", context)


def _merge_context(session: SessionDep, row: service.AdapterRow) -> dict[str, object]:
    run = service.merge_run(session, row.job)
    return {
        "row": row,
        "merge_run": run,
        "merge_live": run is not None and not run.status.is_final,
        "merged": service.merged_ready(row.job),
        "mergeable": row.job.spec.get("adapter") in service.MERGEABLE,
    }


@router.post("/adapters/{job_id}/merge")
def merge(request: Request, session: SessionDep, user: PageUser, job_id: uuid.UUID) -> Response:
    service.start_merge(session, user=user, row=service.get_adapter(session, job_id, user=user))
    return RedirectResponse(f"/adapters/{job_id}#merge", status_code=303)


@router.get("/adapters/{job_id}/_merge")
def merge_live(request: Request, session: SessionDep, user: PageUser, job_id: uuid.UUID) -> Response:
    context = _merge_context(session, service.get_adapter(session, job_id, user=user))
    return render_live(request, "adapters/_merge.html", context, live=bool(context["merge_live"]))


@router.get("/adapters/{job_id}/merged.zip")
def merged_zip(request: Request, session: SessionDep, user: PageUser, job_id: uuid.UUID) -> Response:
    row = service.get_adapter(session, job_id, user=user)
    return StreamingResponse(
        service.merged_zip(session, row),
        media_type="application/zip",
        headers={"Content-Disposition": f'attachment; filename="refinery-merged-{job_id.hex[:8]}.zip"'},
    )


def _gguf_context(session: SessionDep, row: service.AdapterRow) -> dict[str, object]:
    found = exports.states(session, row)
    items = [
        {
            "format": state.format,
            "label": _(exports.FORMAT_LABELS[state.format]),
            "refused": state.refused,
            "facts": state.facts,
            "run": state.run,
            "live": state.live,
            "modelfile": exports.modelfile(row, state.format) if state.facts.get("modelfile") else "",
        }
        for state in found
    ]
    return {"row": row, "gguf": items, "gguf_live": any(state.live for state in found)}


@router.post("/adapters/{job_id}/gguf")
def export_gguf(request: Request, session: SessionDep, user: PageUser, form: FormDep, job_id: uuid.UUID) -> Response:
    row = service.get_adapter(session, job_id, user=user)
    exports.start(session, user=user, row=row, fmt=str(form.get("format", "")))
    return RedirectResponse(f"/adapters/{job_id}#gguf", status_code=303)


@router.get("/adapters/{job_id}/_gguf")
def gguf_live(request: Request, session: SessionDep, user: PageUser, job_id: uuid.UUID) -> Response:
    context = _gguf_context(session, service.get_adapter(session, job_id, user=user))
    return render_live(request, "adapters/_gguf.html", context, live=bool(context["gguf_live"]))


@router.get("/adapters/{job_id}/gguf/{fmt}/archive.zip")
def gguf_archive(request: Request, session: SessionDep, user: PageUser, job_id: uuid.UUID, fmt: str) -> Response:
    row = service.get_adapter(session, job_id, user=user)
    return StreamingResponse(
        exports.archive(session, row, fmt),
        media_type="application/zip",
        headers={"Content-Disposition": f'attachment; filename="refinery-{job_id.hex[:8]}-{fmt}-gguf.zip"'},
    )


@router.get("/adapters/{job_id}/gguf/{fmt}/file")
def gguf_file(request: Request, session: SessionDep, user: PageUser, job_id: uuid.UUID, fmt: str) -> Response:
    path = exports.file_path(service.get_adapter(session, job_id, user=user), fmt)
    return FileResponse(path, media_type="application/octet-stream", filename=f"refinery-{job_id.hex[:8]}-{path.name}")


@router.post("/adapters/{job_id}/delete")
def delete(request: Request, session: SessionDep, user: PageUser, form: FormDep, job_id: uuid.UUID) -> Response:
    row = service.get_adapter(session, job_id, user=user)
    if form.get("confirm") != "yes":
        raise InvalidInput(_("Tick the box to confirm the deletion."), field="confirm")
    service.delete_adapter(session, row, user=user)
    return RedirectResponse("/adapters", status_code=303)


@router.post("/adapters/{job_id}/tags")
def tags(request: Request, session: SessionDep, user: PageUser, form: FormDep, job_id: uuid.UUID) -> Response:
    row = service.get_adapter(session, job_id, user=user)
    service.set_tags(row.job, str(form.get("tags", "")))
    return RedirectResponse(f"/adapters/{job_id}", status_code=303)
