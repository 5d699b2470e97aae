"""Request dependencies of the core: the request-scoped database session and the CSRF check. Who is asking
(cookie or API key) is the users package's: app/users/deps.py."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Annotated
from urllib.parse import urlsplit

from fastapi import Depends, Request
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.orm import Session

from app.core.errors import Forbidden, ServiceUnavailable
from app.core.i18n import _
from app.core.security import tokens_match
from app.db.session import get_sessionmaker

SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}
log = logging.getLogger(__name__)


def get_db() -> Iterator[Session]:
    """The request owns the transaction: commit when the handler succeeds, roll back otherwise.

    The dependency's scope is the handler ("function"): the commit happens as the handler returns and before
    the response is sent, so a client never sees an answer whose writes could still fail, and it runs in a
    worker thread like the handler itself. Every route that uses a session is a plain ``def``: no database
    call blocks the event loop, and nothing is awaited while a transaction is open (a form or an upload is
    read by an async dependency declared before the session, see app/core/forms.py)."""
    session = get_sessionmaker()()
    try:
        yield session
        session.commit()
    except (OperationalError, PoolTimeout) as exc:
        log.warning("database error: %s", exc)
        session.rollback()
        raise ServiceUnavailable(_("The database is not reachable right now; try again shortly.")) from exc
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


SessionDep = Annotated[Session, Depends(get_db, scope="function")]


def end_reads(session: Session) -> None:
    """End the reads done so far, before something is awaited (a body arriving, a streamed answer). The
    objects read stay usable (expire_on_commit is off); the next query begins a new transaction."""
    session.commit()


def bearer_token(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _sep, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


MAX_MULTIPART_FIELDS = 20


def _same_origin(origin: str, request: Request) -> bool:
    parts = urlsplit(origin)
    host = request.headers.get("host", "")
    return bool(parts.scheme in ("http", "https") and parts.netloc and parts.netloc == host)


async def csrf_protect(request: Request) -> None:
    """State changes made with the session cookie need the session's token and a same-origin request.

    Requests authenticated by an API key carry no ambient credential, so they need no token.
    """
    if request.method in SAFE_METHODS or bearer_token(request) is not None:
        return
    origin = request.headers.get("origin")
    if origin is not None and not _same_origin(origin, request):
        raise Forbidden(_("Cross-site request refused."), code="csrf")
    sent = request.headers.get("x-csrf-token")
    content_type = request.headers.get("content-type", "")
    if not sent and content_type.startswith(("application/x-www-form-urlencoded", "multipart/form-data")):
        # Starlette keeps the first parse of a form, so these limits are the routes' too: an upload form
        # has at most an adapter's four files and a few fields; a plain form (the recipe builder's two
        # thousand fields) is small anyway, as every body but an upload is capped at 1 MB
        if content_type.startswith("multipart/"):
            form = await request.form(max_files=4, max_fields=MAX_MULTIPART_FIELDS)
        else:
            form = await request.form(max_files=0, max_fields=2000)
        value = form.get("csrf_token")
        sent = value if isinstance(value, str) else None
    if not tokens_match(request.session.get("csrf"), sent):
        raise Forbidden(
            _("The form has expired or did not come from this site; reload the page and try again."),
            code="csrf",
        )
