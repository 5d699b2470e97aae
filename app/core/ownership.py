"""The one ownership rule: another user's object answers 404, exactly like a missing one."""

from __future__ import annotations

import uuid
from typing import Any, Protocol, TypeVar

from sqlalchemy.orm import Session

from app.core.errors import NotFound
from app.core.i18n import _


class Owned(Protocol):
    owner_id: Any


T = TypeVar("T", bound=Owned)
R = TypeVar("R")


def get_owned(
    session: Session, model: type[T], object_id: uuid.UUID, *, user: Any, message: str, shared_ok: bool = False
) -> T:
    """Load ``model`` by id for ``user``. With ``shared_ok``, objects without an owner (shared, such as the
    bundled base model) are visible to everyone."""
    found = session.get(model, object_id)
    if found is None:
        raise NotFound(message)
    if found.owner_id == user.id or (shared_ok and found.owner_id is None):
        return found
    raise NotFound(message)


def referenced(session: Session, model: type[R], object_id: Any) -> R:
    """An object another one refers to by a key the database keeps valid (RESTRICT or CASCADE): it exists.
    Answers from the session's identity map when a list's query loaded it already (selectinload)."""
    found = session.get(model, object_id)
    if found is None:  # only a broken database gets here
        raise NotFound(_("The %(kind)s this refers to is missing.", kind=model.__name__))
    return found
