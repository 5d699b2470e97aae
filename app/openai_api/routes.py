"""OpenAI-compatible endpoints under /v1, shaped like OpenAI's objects so that the official ``openai`` package
works by changing ``base_url`` (and ``api_key`` to a Refinery API key):

* ``/v1/models`` — see app/openai_api/models.py (readable ids; the older ones keep working);
* ``/v1/chat/completions`` — answered by the inference process, streamed or not;
* ``/v1/files`` — ``purpose="fine-tune"`` uploads become datasets (validated in the background), and every
  dataset of the caller is a file here.

Errors use OpenAI's shape (``{"error": {"message", "type", "param", "code"}}``, see app/main.py).
"""

from __future__ import annotations

import csv
import io
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any, Literal, TypeVar

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, Field
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from app.core.config import get_settings
from app.core.deps import SessionDep, commit_now, csrf_protect, end_reads
from app.core.errors import Conflict, InvalidInput, NotFound
from app.core.i18n import _
from app.core.openapi import BINARY, multipart_body
from app.core.validation import Metadata
from app.datasets import records
from app.datasets import service as datasets
from app.datasets.storage import StoredFile, artifact_path, discard, save_stream
from app.db.models import Dataset, DatasetStatus, TrainingJob, User
from app.inference.client import stream_chat, until_disconnected
from app.inference.shapes import DONE, Completion, error_event
from app.jobs import files as job_files
from app.jobs import service as jobs
from app.openai_api import stored
from app.openai_api.models import find
from app.users.deps import CurrentUser

T = TypeVar("T")
router = APIRouter(prefix="/v1", tags=["openai-compatible"], dependencies=[Depends(csrf_protect)])


def _epoch(value: Any) -> int:
    return int(value.timestamp())


# ---- chat completions -------------------------------------------------------------------------------------


class ChatMessage(BaseModel):
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[dict[str, Any]] = Field(description="Text, or a list of text parts.")


class StreamOptions(BaseModel):
    include_usage: bool = Field(False, description="End the stream with a chunk carrying the token counts.")


class ChatCompletionRequest(BaseModel):
    model: str = Field(max_length=300)
    messages: list[ChatMessage] = Field(min_length=1, max_length=200)
    temperature: float = Field(1.0, ge=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    max_tokens: int | None = Field(None, ge=1, le=4096)
    max_completion_tokens: int | None = Field(None, ge=1, le=4096)
    n: int = Field(1, ge=1, le=1, description="Only one choice is generated.")
    stream: bool = False
    stream_options: StreamOptions | None = None
    seed: int | None = Field(
        None, ge=-(2**63), le=2**63 - 1, description="Sampling seed: the same seed and request, the same answer."
    )
    store: bool = Field(False, description="Keep the request and the answer: GET /v1/chat/completions lists them.")
    metadata: Metadata | None = Field(None, description="Up to 16 key/value pairs kept with a stored answer.")


def _text(content: str | list[dict[str, Any]]) -> str:
    if isinstance(content, str):
        return content
    parts = [p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text"]
    if len(parts) != len(content):
        raise InvalidInput(_("Only text content parts are supported."), field="messages")
    return "".join(str(p) for p in parts)


@router.post("/chat/completions", summary="Chat with a base model or an adapter (OpenAI-compatible)")
async def chat_completions(
    request: Request, body: ChatCompletionRequest, session: SessionDep, user: CurrentUser
) -> Response:
    def resolve() -> Any:
        try:
            return find(session, user, body.model)
        finally:
            end_reads(session)  # nothing is awaited below with a transaction open

    entry = await run_in_threadpool(resolve)
    model = entry.target  # a deployment's model as it is now: a promotion later does not change this answer
    keeping = body.store or (entry.deployment and get_settings().store_deployment_traffic)
    messages = [
        {"role": "system" if m.role == "developer" else m.role, "content": _text(m.content)[:100_000]}
        for m in body.messages
    ]
    params: dict[str, Any] = {
        "temperature": body.temperature,
        "top_p": body.top_p,
        "max_tokens": body.max_completion_tokens or body.max_tokens or 256,
    }
    if body.seed is not None:
        params["seed"] = body.seed
    params["user"] = str(user.id)  # the inference server serves waiting requests in turns per user
    started = time.time()  # kept to the microsecond, so that stored answers list in the order they were asked
    completion = Completion(body.model, created=int(started))
    ending: dict[str, Any] = {}
    pieces = stream_chat(model, messages, ending, **params)
    first = await anext(pieces, "")  # a refusal before the first token is a clean error response

    async def keep(text: str) -> None:
        if keeping:
            request_params = {k: v for k, v in params.items() if k != "user"}
            await run_in_threadpool(
                lambda: stored.store(
                    owner=user,
                    completion_id=completion.id,
                    created=started,
                    model=body.model,
                    messages=messages,
                    answer=text,
                    finish_reason=ending.get("finish_reason", "stop"),
                    usage=ending.get("usage"),
                    request=request_params,
                    metadata=body.metadata,
                )
            )

    if not body.stream:
        text = first + await until_disconnected(request, pieces)
        await keep(text)
        return JSONResponse(completion.whole(text, ending.get("finish_reason", "stop"), ending.get("usage")))
    with_usage = body.stream_options is not None and body.stream_options.include_usage

    async def events() -> AsyncIterator[str]:
        yield completion.chunk({"role": "assistant", "content": ""})
        if first:
            yield completion.chunk({"content": first})
        said = [first]
        try:
            async for piece in pieces:
                said.append(piece)
                yield completion.chunk({"content": piece})
            yield completion.chunk({}, ending.get("finish_reason", "stop"))
            if with_usage and ending.get("usage"):
                yield completion.usage_chunk(ending["usage"])
            await keep("".join(said))  # a whole answer only: one cut off by a lost client is not kept
        except Exception as exc:  # the stream has started: the error travels in it
            yield error_event(str(exc))
        finally:
            await pieces.aclose()  # a client that went away closes the stream to the inference server too
        yield DONE

    return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-store"})


# ---- files ------------------------------------------------------------------------------------------------


class FileObject(BaseModel):
    id: str
    object: Literal["file"] = "file"
    bytes: int
    created_at: int
    filename: str
    purpose: Literal["fine-tune", "fine-tune-results"] = "fine-tune"
    status: Literal["uploaded", "processed", "error"]
    status_details: str | None = None


class FileList(BaseModel):
    object: Literal["list"] = "list"
    data: list[FileObject]
    has_more: bool = False


class FileDeleted(BaseModel):
    id: str
    object: Literal["file"] = "file"
    deleted: bool


def file_id(dataset: Dataset) -> str:
    return f"file-{dataset.id.hex}"


def by_public_id(ident: str, prefix: str, load: Callable[[uuid.UUID], T], missing: NotFound) -> T:
    """The object behind an OpenAI-style id (``<prefix><uuid hex>``); ``missing`` for a malformed id, or one
    of somebody else's (the loaders' ownership check)."""
    try:
        return load(uuid.UUID(hex=ident.removeprefix(prefix)))
    except (ValueError, NotFound) as exc:
        raise missing from exc


RESULT_PREFIX = "file-result-"
RESULT_COLUMNS = ("step", "train_loss", "train_accuracy", "valid_loss", "valid_mean_token_accuracy")


def result_file_id(job: TrainingJob) -> str:
    return f"{RESULT_PREFIX}{job.id.hex}"


def _result_job(session: Session, user: User, ident: str) -> TrainingJob:
    missing = NotFound(_("No such file: '%(id)s'.", id=ident[:100]), code="file_not_found", field="file_id")
    return by_public_id(ident, RESULT_PREFIX, lambda key: jobs.get_job(session, key, user=user), missing)


def result_csv(job: TrainingJob) -> bytes:
    """OpenAI's result file: one row per logged step, training and validation loss and token accuracy; a
    reinforcement job's rows add the mean reward of the step's answers and its spread."""
    rows: dict[int, dict[str, Any]] = {}
    for logged in job_files.metrics(job):
        row = rows.setdefault(int(logged["step"]), {"step": int(logged["step"])})
        if "loss" in logged:
            row["train_loss"] = logged["loss"]
            row["train_accuracy"] = logged.get("mean_token_accuracy")
            row["reward"] = logged.get("reward")
            row["reward_std"] = logged.get("reward_std")
        if "eval_loss" in logged:
            row["valid_loss"] = logged["eval_loss"]
            row["valid_mean_token_accuracy"] = logged.get("eval_mean_token_accuracy")
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    rewarded = any(row.get("reward") is not None for row in rows.values())
    columns = (*RESULT_COLUMNS, "reward", "reward_std") if rewarded else RESULT_COLUMNS
    writer.writerow(columns)
    for step in sorted(rows):
        writer.writerow(["" if rows[step].get(c) is None else rows[step][c] for c in columns])
    return out.getvalue().encode()


def to_result_file(job: TrainingJob) -> FileObject:
    return FileObject(
        id=result_file_id(job),
        bytes=len(result_csv(job)),
        created_at=_epoch(job.created_at),
        filename="step_metrics.csv",
        purpose="fine-tune-results",
        status="processed",
    )


def get_file(session: Session, user: User, ident: str) -> Dataset:
    """The caller's dataset behind a file id; OpenAI's 404 otherwise."""
    missing = NotFound(_("No such file: '%(id)s'.", id=ident[:100]), code="file_not_found", field="file_id")
    return by_public_id(ident, "file-", lambda key: datasets.get_dataset(session, key, user=user), missing)


def problems(dataset: Dataset) -> str | None:
    """Why a file cannot be trained on as it is: every bad line number (up to 20), the first three with their
    reasons; None when it can."""
    if dataset.status == DatasetStatus.failed:
        return dataset.error_message or _("The file could not be read.")
    if dataset.status != DatasetStatus.needs_review:
        return None
    report = dataset.report or {}
    rows, total = records.page_issues(datasets.staged_records_key(dataset), page=1, page_size=20)
    reasons = "; ".join(_("line %(line)s: %(text)s", line=r.line, text=r.message) for r in rows[:3])
    numbers = ", ".join(str(r.line) for r in rows)
    if total > len(rows):
        numbers += _(" and %(more)s more", more=total - len(rows))
    return _(
        "%(bad)s of %(lines)s lines are invalid (lines %(numbers)s). %(first)s. Fix them and upload the file again.",
        bad=report.get("invalid_lines", total),
        lines=report.get("invalid_lines", 0) + report.get("valid_lines", 0),
        numbers=numbers,
        first=reasons,
    )


def to_file(session: Session, dataset: Dataset) -> FileObject:
    upload = datasets.get_upload(session, dataset)
    status: Literal["uploaded", "processed", "error"] = "uploaded"
    if dataset.status == DatasetStatus.ready:
        status = "processed"
    elif dataset.status in (DatasetStatus.failed, DatasetStatus.needs_review):
        status = "error"
    return FileObject(
        id=file_id(dataset),
        bytes=upload.size_bytes,
        created_at=_epoch(dataset.created_at),
        filename=upload.filename,
        status=status,
        status_details=problems(dataset),
    )


FILE_BODY = multipart_body(
    {
        "file": {**BINARY, "description": "JSONL of chat or DPO records"},
        "purpose": {"type": "string", "enum": ["fine-tune"]},
    },
    required=["file", "purpose"],
)


async def received_file(request: Request) -> AsyncIterator[tuple[StoredFile, str]]:
    """The uploaded file, stored before the handler runs and removed again if the handler fails."""
    form = await request.form(max_files=1, max_fields=5)
    try:
        purpose, upload = form.get("purpose"), form.get("file")
        if purpose != "fine-tune":
            raise InvalidInput(_("Only purpose 'fine-tune' is supported."), field="purpose")
        if not isinstance(upload, UploadFile):
            raise InvalidInput(_("Send the file as the multipart field 'file'."), field="file")
        stored = await run_in_threadpool(save_stream, upload.file, limit=get_settings().max_upload_bytes)
        filename = upload.filename or "upload.jsonl"
    finally:
        await form.close()
    try:
        yield stored, filename
    except BaseException:
        discard(stored)
        raise


@router.post("/files", response_model=FileObject, openapi_extra=FILE_BODY, summary="Upload a file (fine-tune)")
def create_file(
    session: SessionDep,
    user: CurrentUser,
    received: Annotated[tuple[StoredFile, str], Depends(received_file, scope="function")],
) -> FileObject:
    stored, filename = received
    # OpenAI trains on every record of a training file (a validation file is a file of its own)
    whole = {"train": 1.0, "validation": 0.0, "test": 0.0}
    dataset = datasets.create_dataset(session, user=user, stored=stored, filename=filename, name=filename, ratios=whole)
    commit_now(session)
    return to_file(session, dataset)


@router.get("/files", response_model=FileList, summary="Your files: every dataset (OpenAI-compatible)")
def list_files(
    session: SessionDep,
    user: CurrentUser,
    purpose: str | None = None,
    after: str | None = Query(None, max_length=100, description="A file id: the page starts after it."),
    limit: int = Query(10_000, ge=1, le=10_000),
    order: Literal["asc", "desc"] = "desc",
) -> FileList:
    """Paged in SQL (OpenAI's ``after``/``limit``/``order`` by creation time), each file's upload preloaded."""
    if purpose not in (None, "fine-tune"):
        return FileList(data=[])
    cursor = None
    if after:
        try:
            cursor = uuid.UUID(hex=after.removeprefix("file-"))
        except ValueError:
            return FileList(data=[])
    page, more = datasets.page_datasets(session, user=user, after=cursor, limit=limit, newest_first=order == "desc")
    return FileList(data=[to_file(session, d) for d in page], has_more=more)


@router.get("/files/{file_id}", response_model=FileObject, summary="One file")
def retrieve_file(file_id: str, session: SessionDep, user: CurrentUser) -> FileObject:
    if file_id.startswith(RESULT_PREFIX):
        return to_result_file(_result_job(session, user, file_id))
    return to_file(session, get_file(session, user, file_id))


@router.get(
    "/files/{file_id}/content", response_class=FileResponse, summary="The file as it was uploaded, or a result CSV"
)
def file_content(file_id: str, session: SessionDep, user: CurrentUser) -> Response:
    if file_id.startswith(RESULT_PREFIX):
        job = _result_job(session, user, file_id)
        return Response(
            result_csv(job),
            media_type="text/csv",
            headers={"Content-Disposition": f'attachment; filename="{file_id}.csv"'},
        )
    dataset = get_file(session, user, file_id)
    upload = datasets.get_upload(session, dataset)
    # an attachment under a name the server makes: the browser never renders a user's file as a page
    return FileResponse(
        artifact_path(upload.storage_key),
        media_type="application/octet-stream",
        filename=f"file-{dataset.id.hex}",
        content_disposition_type="attachment",
    )


@router.delete("/files/{file_id}", response_model=FileDeleted, summary="Delete a file no job uses")
def delete_file(file_id: str, session: SessionDep, user: CurrentUser) -> FileDeleted:
    if file_id.startswith(RESULT_PREFIX):
        _result_job(session, user, file_id)
        raise Conflict(_("A result file is part of its job; delete the fine-tuned model instead."), field="file_id")
    dataset = get_file(session, user, file_id)
    if not datasets.deletable(session, dataset):
        raise Conflict(_("A training job or evaluation uses this file; it cannot be deleted."), field="file_id")
    datasets.delete_dataset(session, dataset)
    return FileDeleted(id=file_id, deleted=True)
