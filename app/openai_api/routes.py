"""OpenAI-compatible endpoints under /v1, shaped like OpenAI's objects so that the official ``openai`` package
works by changing ``base_url`` (and ``api_key`` to a Refinery API key):

* ``/v1/models`` — the base models and succeeded adapters the caller may use (ids ``base-<id>``,
  ``job-<id>``; a base model's name works as an alias);
* ``/v1/chat/completions`` — answered by the inference process, streamed or not;
* ``/v1/files`` — ``purpose="fine-tune"`` uploads become datasets (validated in the background), and every
  dataset of the caller is a file here.

Errors use OpenAI's shape (``{"error": {"message", "type", "param", "code"}}``, see app/main.py).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any, Literal, TypeVar

from fastapi import APIRouter, Depends, Request
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, Field
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from app.core.config import get_settings
from app.core.deps import SessionDep, csrf_protect
from app.core.errors import Conflict, InvalidInput, NotFound
from app.core.i18n import _
from app.core.openapi import BINARY, multipart_body
from app.datasets import records
from app.datasets import service as datasets
from app.datasets.storage import artifact_path, discard, save_stream
from app.db.models import Dataset, DatasetStatus, User
from app.inference.client import stream_chat, until_disconnected
from app.inference.shapes import DONE, Completion, error_event
from app.playground import service as playground
from app.users.deps import CurrentUser

T = TypeVar("T")
router = APIRouter(prefix="/v1", tags=["openai-compatible"], dependencies=[Depends(csrf_protect)])


def _epoch(value: Any) -> int:
    return int(value.timestamp())


# ---- models -----------------------------------------------------------------------------------------------


class ModelObject(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelObject]


def _models(session: Session, user: User) -> dict[str, tuple[ModelObject, str]]:
    """id -> (model object, display name), for everything the caller may chat with (checkpoints excluded)."""
    from app.db.models import BaseModelRecord, TrainingJob

    found: dict[str, tuple[ModelObject, str]] = {}
    for chat in playground.chat_models(session, user=user):
        if chat.group == "checkpoint":
            continue
        kind, _sep, ident = chat.name.partition("-")
        row: BaseModelRecord | TrainingJob | None = (
            session.get(BaseModelRecord, uuid.UUID(ident))
            if kind == "base"
            else session.get(TrainingJob, uuid.UUID(ident))
        )
        owner = "refinery" if row is None or row.owner_id is None else "user"
        created = _epoch(row.created_at) if row is not None else 0
        found[chat.name] = (ModelObject(id=chat.name, created=created, owned_by=owner), chat.label)
    return found


def resolve_model(session: Session, user: User, name: str) -> str:
    """The inference name for an id or a base model's display name; 404 in OpenAI's words otherwise."""
    models = _models(session, user)
    if name in models:
        return name
    aliases = [ident for ident, (obj, label) in models.items() if label == name and ident.startswith("base-")]
    if aliases:
        return aliases[0]
    raise NotFound(
        _("The model '%(model)s' does not exist or you do not have access to it.", model=name[:200]),
        code="model_not_found",
        field="model",
    )


@router.get("/models", response_model=ModelList, summary="Models you can use (OpenAI-compatible)")
def list_models(session: SessionDep, user: CurrentUser) -> ModelList:
    return ModelList(data=[obj for obj, _label in _models(session, user).values()])


@router.get("/models/{model}", response_model=ModelObject, summary="One model (OpenAI-compatible)")
def retrieve_model(model: str, session: SessionDep, user: CurrentUser) -> ModelObject:
    return _models(session, user)[resolve_model(session, user, model)][0]


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
    model = await run_in_threadpool(resolve_model, session, user, body.model)
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
    completion = Completion(body.model)
    ending: dict[str, Any] = {}
    pieces = stream_chat(model, messages, ending, **params)
    first = await anext(pieces, "")  # a refusal before the first token is a clean error response
    if not body.stream:
        text = first + await until_disconnected(request, pieces)
        return JSONResponse(completion.whole(text, ending.get("finish_reason", "stop"), ending.get("usage")))
    with_usage = body.stream_options is not None and body.stream_options.include_usage

    async def events() -> AsyncIterator[str]:
        yield completion.chunk({"role": "assistant", "content": ""})
        if first:
            yield completion.chunk({"content": first})
        try:
            async for piece in pieces:
                yield completion.chunk({"content": piece})
            yield completion.chunk({}, ending.get("finish_reason", "stop"))
            if with_usage and ending.get("usage"):
                yield completion.usage_chunk(ending["usage"])
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
    purpose: Literal["fine-tune"] = "fine-tune"
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


@router.post("/files", response_model=FileObject, openapi_extra=FILE_BODY, summary="Upload a file (fine-tune)")
async def create_file(request: Request, session: SessionDep, user: CurrentUser) -> FileObject:
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
    # OpenAI trains on every record of a training file (a validation file is a file of its own)
    whole = {"train": 1.0, "validation": 0.0, "test": 0.0}
    try:
        dataset = datasets.create_dataset(
            session, user=user, stored=stored, filename=filename, name=filename, ratios=whole
        )
        session.flush()
    except BaseException:
        discard(stored)
        raise
    return to_file(session, dataset)


@router.get("/files", response_model=FileList, summary="Your files: every dataset (OpenAI-compatible)")
def list_files(session: SessionDep, user: CurrentUser, purpose: str | None = None) -> FileList:
    if purpose not in (None, "fine-tune"):
        return FileList(data=[])
    return FileList(data=[to_file(session, d) for d in datasets.list_datasets(session, user=user)])


@router.get("/files/{file_id}", response_model=FileObject, summary="One file")
def retrieve_file(file_id: str, session: SessionDep, user: CurrentUser) -> FileObject:
    return to_file(session, get_file(session, user, file_id))


@router.get("/files/{file_id}/content", response_class=FileResponse, summary="The file as it was uploaded")
def file_content(file_id: str, session: SessionDep, user: CurrentUser) -> FileResponse:
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
    dataset = get_file(session, user, file_id)
    if not datasets.deletable(session, dataset):
        raise Conflict(_("A training job or evaluation uses this file; it cannot be deleted."), field="file_id")
    datasets.delete_dataset(session, dataset)
    return FileDeleted(id=file_id, deleted=True)
