"""/v1/evals: OpenAI's Evals API on Refinery (``client.evals``, ``client.evals.runs``,
``client.evals.runs.output_items``). The domain is app/evaluation/evals.py; this module speaks OpenAI's
shapes: ids ``eval_<hex>`` / ``evalrun_<hex>`` / ``outputitem_<run hex>_<n>``, times as Unix seconds, pages
with ``after``/``limit``/``order``."""

from __future__ import annotations

import uuid
from typing import Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from sqlalchemy.orm import Session

from app.core.deps import SessionDep, csrf_protect
from app.core.errors import InvalidInput, NotFound
from app.core.i18n import _
from app.datasets import service as datasets
from app.datasets.storage import artifact_path
from app.db.models import EvalDefinition, EvalRun, User
from app.evaluation import evals
from app.openai_api.models import resolve_model
from app.openai_api.routes import by_public_id, get_file
from app.runs import service as runs
from app.users.deps import CurrentUser

router = APIRouter(prefix="/v1/evals", tags=["openai-compatible"], dependencies=[Depends(csrf_protect)])

EVAL_PREFIX, RUN_PREFIX, ITEM_PREFIX = "eval_", "evalrun_", "outputitem_"
ZERO_USAGE = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0, "cached_tokens": 0}


def _epoch(row: Any) -> int:
    return int(row.created_at.timestamp())


def eval_id(row: EvalDefinition) -> str:
    return f"{EVAL_PREFIX}{row.id.hex}"


def run_id(row: EvalRun) -> str:
    return f"{RUN_PREFIX}{row.id.hex}"


def to_eval(row: EvalDefinition) -> dict[str, Any]:
    return {
        "id": eval_id(row),
        "object": "eval",
        "name": row.name,
        "created_at": _epoch(row),
        "data_source_config": row.data_source_config,
        "testing_criteria": row.testing_criteria,
        "metadata": row.metadata_,
    }


def to_run(session: Session, row: EvalRun, request: Request) -> dict[str, Any]:
    run = runs.optional_run(session, row.run_id)
    status = evals.run_status(run)
    summary = row.summary or {}
    counts = summary.get("result_counts") or {"total": 0, "passed": 0, "failed": 0, "errored": 0}
    error = {"code": "", "message": ""}
    if run is not None and status == "failed":
        error = {"code": run.error_code or "run_failed", "message": run.error_message or ""}
    return {
        "id": run_id(row),
        "object": "eval.run",
        "eval_id": f"{EVAL_PREFIX}{row.eval_id.hex}",
        "name": row.name,
        "created_at": _epoch(row),
        "status": status,
        "model": row.model,
        "data_source": row.data_source,
        "error": error,
        "metadata": row.metadata_,
        "per_model_usage": [],
        "per_testing_criteria_results": summary.get("per_testing_criteria_results") or [],
        "result_counts": counts,
        "report_url": str(request.base_url).rstrip("/") + f"/evals/{row.eval_id}/runs/{row.id}",
    }


def to_output_item(row: EvalRun, entry: dict[str, Any]) -> dict[str, Any]:
    sample = entry.get("sample") or {}
    text = sample.get("output_text")
    return {
        "id": f"{ITEM_PREFIX}{row.id.hex}_{entry['index']}",
        "object": "eval.run.output_item",
        "created_at": _epoch(row),
        "eval_id": f"{EVAL_PREFIX}{row.eval_id.hex}",
        "run_id": run_id(row),
        "datasource_item_id": entry["index"],
        "datasource_item": entry["item"],
        "status": entry["status"],
        "results": entry["results"],
        "sample": {
            "input": sample.get("input") or [],
            "output": [{"role": "assistant", "content": text}] if text is not None else [],
            "model": str(sample.get("model", "")),
            "finish_reason": str(sample.get("finish_reason", "stop" if text is not None else "")),
            "error": sample.get("error") or {"code": "", "message": ""},
            "max_completion_tokens": int(sample.get("max_completion_tokens") or 0),
            "seed": int(sample.get("seed") or 0),
            "temperature": float(sample.get("temperature") or 0.0),
            "top_p": float(sample.get("top_p") or 1.0),
            "usage": {**ZERO_USAGE, **(sample.get("usage") or {})},
        },
    }


def _eval(session: Session, user: User, ident: str) -> EvalDefinition:
    missing = NotFound(_("No such eval: '%(id)s'.", id=ident[:100]), code="eval_not_found", field="eval_id")
    return by_public_id(ident, EVAL_PREFIX, lambda key: evals.get_eval(session, key, user=user), missing)


def _run(session: Session, row: EvalDefinition, ident: str) -> EvalRun:
    missing = NotFound(_("No such run: '%(id)s'.", id=ident[:100]), code="run_not_found", field="run_id")
    return by_public_id(ident, RUN_PREFIX, lambda key: evals.get_run(session, row, key), missing)


def _page(rows: list[dict[str, Any]], more: bool) -> dict[str, Any]:
    return {
        "object": "list",
        "data": rows,
        "first_id": rows[0]["id"] if rows else None,
        "last_id": rows[-1]["id"] if rows else None,
        "has_more": more,
    }


Order = Literal["asc", "desc"]


@router.post("", summary="Create an eval: the items' schema and the graders that test them")
def create_eval(body: evals.EvalCreate, session: SessionDep, user: CurrentUser) -> dict[str, Any]:
    return to_eval(evals.create_eval(session, user=user, body=body))


@router.get("", summary="Your evals")
def list_evals(
    session: SessionDep,
    user: CurrentUser,
    after: str | None = Query(None, max_length=100),
    limit: int = Query(20, ge=1, le=100),
    order: Order = "asc",
    order_by: Literal["created_at", "updated_at"] = "created_at",
) -> dict[str, Any]:
    cursor = None
    if after:
        try:
            cursor = evals.get_eval(session, uuid.UUID(after.removeprefix(EVAL_PREFIX)), user=user)
        except (ValueError, NotFound):
            return _page([], False)
    rows, more = evals.page_evals(session, user=user, after=cursor, limit=limit, newest_first=order == "desc")
    return _page([to_eval(r) for r in rows], more)


@router.get("/{eval_ident}", summary="One eval")
def retrieve_eval(eval_ident: str, session: SessionDep, user: CurrentUser) -> dict[str, Any]:
    return to_eval(_eval(session, user, eval_ident))


@router.post("/{eval_ident}", summary="Rename an eval or replace its metadata")
def update_eval(eval_ident: str, body: evals.EvalUpdate, session: SessionDep, user: CurrentUser) -> dict[str, Any]:
    return to_eval(evals.update_eval(_eval(session, user, eval_ident), body))


@router.delete("/{eval_ident}", summary="Delete an eval, its runs and their results")
def delete_eval(eval_ident: str, session: SessionDep, user: CurrentUser) -> dict[str, Any]:
    row = _eval(session, user, eval_ident)
    evals.delete_eval(session, row)
    return {"object": "eval.deleted", "deleted": True, "eval_id": eval_id(row)}


@router.post("/{eval_ident}/runs", summary="Start a run: grade a JSONL source's items in the background")
def create_run(
    eval_ident: str, body: evals.EvalRunCreate, request: Request, session: SessionDep, user: CurrentUser
) -> dict[str, Any]:
    row = _eval(session, user, eval_ident)
    file_bytes, inference_model = None, None
    source = body.data_source
    evals.refuse_stored(source)
    if isinstance(source, evals.CompletionsDataSource | evals.ResponsesDataSource):
        evals.check_prompt(source)
        try:
            inference_model = resolve_model(session, user, source.model)
        except NotFound as exc:
            raise NotFound(exc.message, code="model_not_found", field="data_source.model") from None
    if isinstance(source.source, evals.FileIdSource):
        upload = datasets.get_upload(session, get_file(session, user, source.source.id))
        if upload.size_bytes > evals.MAX_ITEMS_BYTES:
            raise InvalidInput(
                _("An eval's file may hold at most %(mb)s MB.", mb=evals.MAX_ITEMS_BYTES // 2**20),
                field="data_source.source.id",
            )
        file_bytes = artifact_path(upload.storage_key).read_bytes()
    made = evals.create_run(
        session, user=user, row=row, body=body, file_bytes=file_bytes, inference_model=inference_model
    )
    return to_run(session, made, request)


@router.get("/{eval_ident}/runs", summary="An eval's runs")
def list_runs(
    eval_ident: str,
    request: Request,
    session: SessionDep,
    user: CurrentUser,
    after: str | None = Query(None, max_length=100),
    limit: int = Query(20, ge=1, le=100),
    order: Order = "asc",
    status: Literal["queued", "in_progress", "completed", "canceled", "failed"] | None = None,
) -> dict[str, Any]:
    row = _eval(session, user, eval_ident)
    rows = evals.list_runs(session, row)  # newest first
    if order == "asc":
        rows.reverse()
    if after:
        ids = [run_id(r) for r in rows]
        rows = rows[ids.index(after) + 1 :] if after in ids else []
    shown = [to_run(session, r, request) for r in rows]
    if status is not None:
        shown = [r for r in shown if r["status"] == status]
    return _page(shown[:limit], len(shown) > limit)


@router.get("/{eval_ident}/runs/{run_ident}", summary="One run, with its counts once it has graded")
def retrieve_run(
    eval_ident: str, run_ident: str, request: Request, session: SessionDep, user: CurrentUser
) -> dict[str, Any]:
    row = _eval(session, user, eval_ident)
    return to_run(session, _run(session, row, run_ident), request)


@router.post("/{eval_ident}/runs/{run_ident}", summary="Cancel a run")
def cancel_run(
    eval_ident: str, run_ident: str, request: Request, session: SessionDep, user: CurrentUser
) -> dict[str, Any]:
    row = _eval(session, user, eval_ident)
    return to_run(session, evals.cancel_run(session, _run(session, row, run_ident)), request)


@router.delete("/{eval_ident}/runs/{run_ident}", summary="Delete a run and its results")
def delete_run(eval_ident: str, run_ident: str, session: SessionDep, user: CurrentUser) -> dict[str, Any]:
    row = _eval(session, user, eval_ident)
    eval_run = _run(session, row, run_ident)
    evals.delete_run(session, eval_run)
    return {"object": "eval.run.deleted", "deleted": True, "run_id": run_id(eval_run)}


@router.get("/{eval_ident}/runs/{run_ident}/output_items", summary="Each graded item, with every grader's result")
def list_output_items(
    eval_ident: str,
    run_ident: str,
    session: SessionDep,
    user: CurrentUser,
    after: str | None = Query(None, max_length=200),
    limit: int = Query(20, ge=1, le=100),
    order: Order = "asc",
    status: Literal["pass", "fail", "error"] | None = None,
) -> dict[str, Any]:
    eval_run = _run(session, _eval(session, user, eval_ident), run_ident)
    index = None
    if after:
        try:
            index = int(after.rsplit("_", 1)[1])
        except (IndexError, ValueError):
            return _page([], False)
    found = evals.page_output_items(eval_run, after=index, limit=limit, status=status, newest_first=order == "desc")
    return _page([to_output_item(eval_run, entry) for entry in found.rows], found.has_more)


@router.get("/{eval_ident}/runs/{run_ident}/output_items/{item_ident}", summary="One graded item")
def retrieve_output_item(
    eval_ident: str, run_ident: str, item_ident: str, session: SessionDep, user: CurrentUser
) -> dict[str, Any]:
    eval_run = _run(session, _eval(session, user, eval_ident), run_ident)
    prefix = f"{ITEM_PREFIX}{eval_run.id.hex}_"
    missing = NotFound(_("No such output item: '%(id)s'.", id=item_ident[:200]), field="output_item_id")
    if not item_ident.startswith(prefix) or not item_ident.removeprefix(prefix).isdigit():
        raise missing
    index = int(item_ident.removeprefix(prefix))
    entry = next((e for e in evals.output_items(eval_run) if int(e["index"]) == index), None)
    if entry is None:
        raise missing
    return to_output_item(eval_run, entry)
