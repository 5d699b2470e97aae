"""Stored chat completions, OpenAI's shape: ``store: true`` (with ``metadata``) on /v1/chat/completions keeps the
request and the answer, owned by the caller; ``GET /v1/chat/completions`` lists them (by model, metadata and
time, paged with ``after``/``limit``), and each can be retrieved, its messages listed, its metadata updated,
and deleted. Another user's stored completion is a 404 everywhere."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.core.deps import SessionDep, csrf_protect
from app.core.errors import NotFound
from app.core.i18n import _
from app.core.validation import Metadata
from app.db.models import StoredCompletion, User
from app.db.session import session_scope
from app.users.deps import CurrentUser

router = APIRouter(prefix="/v1", tags=["openai-compatible"], dependencies=[Depends(csrf_protect)])


def store(
    *,
    owner: User,
    completion_id: str,
    created: float,
    model: str,
    messages: list[dict[str, Any]],
    answer: str,
    finish_reason: str,
    usage: dict[str, Any] | None,
    request: dict[str, Any],
    metadata: dict[str, str] | None,
) -> None:
    """Keep one served answer (its own transaction: a streamed answer ends after its request's session)."""
    with session_scope() as session:
        session.add(
            StoredCompletion(
                owner_id=owner.id,
                completion_id=completion_id,
                created_at=datetime.fromtimestamp(created, UTC),
                model=model,
                messages=messages,
                answer=answer,
                finish_reason=finish_reason,
                usage=usage,
                request=request,
                completion_metadata=metadata,
            )
        )


def to_object(row: StoredCompletion) -> dict[str, Any]:
    message = {"role": "assistant", "content": row.answer, "refusal": None}
    return {
        "id": row.completion_id,
        "object": "chat.completion",
        "created": int(row.created_at.timestamp()),
        "model": row.model,
        "choices": [{"index": 0, "message": message, "finish_reason": row.finish_reason, "logprobs": None}],
        "usage": row.usage,
        "metadata": row.completion_metadata or {},
        "request": row.request,
    }


def get_stored(session: Session, user: User, completion_id: str) -> StoredCompletion:
    row = session.scalar(select(StoredCompletion).where(StoredCompletion.completion_id == completion_id[:40]))
    if row is None or row.owner_id != user.id:
        raise NotFound(_("No such stored chat completion: %(id)s.", id=completion_id[:60]), field="completion_id")
    return row


def _matching(
    session: Session, user: User, *, model: str | None, metadata: dict[str, str], order: str
) -> Iterator[StoredCompletion]:
    stmt = select(StoredCompletion).where(StoredCompletion.owner_id == user.id)
    if model:
        stmt = stmt.where(StoredCompletion.model == model)
    ascending = (StoredCompletion.created_at, StoredCompletion.completion_id)
    stmt = stmt.order_by(*ascending) if order == "asc" else stmt.order_by(*(c.desc() for c in ascending))
    for row in session.scalars(stmt.execution_options(yield_per=500)):
        if all((row.completion_metadata or {}).get(k) == v for k, v in metadata.items()):
            yield row


def _page(items: Iterator[Any], ident: Any, after: str | None, limit: int) -> dict[str, Any]:
    """One page after the ``after`` id: the items, the first and last ids, and whether more follow."""
    found: list[Any] = []
    seen = after is None
    for item in items:
        if not seen:
            seen = ident(item) == after
            continue
        found.append(item)
        if len(found) > limit:
            break
    data = found[:limit]
    return {
        "object": "list",
        "data": data,
        "first_id": ident(data[0]) if data else None,
        "last_id": ident(data[-1]) if data else None,
        "has_more": len(found) > limit,
    }


@router.get("/chat/completions", summary="Your stored chat completions (OpenAI-compatible)")
def list_stored(
    request: Request,
    session: SessionDep,
    user: CurrentUser,
    model: str | None = Query(None, max_length=300),
    after: str | None = Query(None, max_length=60),
    limit: int = Query(20, ge=1, le=100),
    order: Literal["asc", "desc"] = "asc",
) -> dict[str, Any]:
    wanted = {
        key[len("metadata[") : -1]: value
        for key, value in request.query_params.items()
        if key.startswith("metadata[") and key.endswith("]")
    }
    rows = _matching(session, user, model=model, metadata=wanted, order=order)
    page = _page(rows, lambda row: row.completion_id, after, limit)
    page["data"] = [to_object(row) for row in page["data"]]
    return page


@router.get("/chat/completions/{completion_id}", summary="One stored chat completion (OpenAI-compatible)")
def retrieve_stored(completion_id: str, session: SessionDep, user: CurrentUser) -> dict[str, Any]:
    return to_object(get_stored(session, user, completion_id))


@router.get("/chat/completions/{completion_id}/messages", summary="A stored chat completion's request messages")
def stored_messages(
    completion_id: str,
    session: SessionDep,
    user: CurrentUser,
    after: str | None = Query(None, max_length=80),
    limit: int = Query(20, ge=1, le=100),
    order: Literal["asc", "desc"] = "asc",
) -> dict[str, Any]:
    row = get_stored(session, user, completion_id)
    messages = [
        {
            "id": f"{row.completion_id}-{index}",
            "role": m.get("role"),
            "content": m.get("content"),
            "name": m.get("name"),
        }
        for index, m in enumerate(row.messages)
    ]
    if order == "desc":
        messages.reverse()
    return _page(iter(messages), lambda m: m["id"], after, limit)


class MetadataUpdate(BaseModel):
    metadata: Metadata | None = Field(description="Replaces the stored completion's metadata.")


@router.post("/chat/completions/{completion_id}", summary="Update a stored chat completion's metadata")
def update_stored(completion_id: str, body: MetadataUpdate, session: SessionDep, user: CurrentUser) -> dict[str, Any]:
    row = get_stored(session, user, completion_id)
    row.completion_metadata = body.metadata
    session.flush()
    return to_object(row)


@router.delete("/chat/completions/{completion_id}", summary="Delete a stored chat completion")
def delete_stored(completion_id: str, session: SessionDep, user: CurrentUser) -> dict[str, Any]:
    row = get_stored(session, user, completion_id)
    session.delete(row)
    session.flush()
    return {"object": "chat.completion.deleted", "id": completion_id, "deleted": True}


def purge_expired(session: Session, *, now: datetime | None = None) -> int:
    """Delete stored completions past the install's retention period (REFINERY_STORED_COMPLETION_RETENTION_DAYS;
    0 keeps them); the reconciler calls it. Datasets made from them keep their records."""
    from datetime import timedelta

    from sqlalchemy import delete

    from app.core.config import get_settings

    days = get_settings().stored_completion_retention_days
    if days <= 0:
        return 0
    cutoff = (now or datetime.now(UTC)) - timedelta(days=days)
    result = session.execute(delete(StoredCompletion).where(StoredCompletion.created_at < cutoff))
    return int(getattr(result, "rowcount", 0) or 0)
