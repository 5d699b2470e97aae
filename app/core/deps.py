"""Request dependencies of the core: the request-scoped database session and the CSRF check. Who is asking
(cookie or API key) is the users package's: app/users/deps.py."""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import AsyncIterator, Callable
from typing import Annotated
from urllib.parse import urlsplit

import anyio
from fastapi import Depends, Request
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from app.core.config import get_settings
from app.core.errors import Forbidden, ServiceUnavailable
from app.core.i18n import _
from app.core.security import tokens_match
from app.db.session import get_sessionmaker

SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}
log = logging.getLogger(__name__)


# How many requests hold a database session at once: one fewer than the handler threads. A handler that
# wrote holds SQLite's one write lock until its session ends, and FastAPI ends it only after the answer is
# serialised, on a handler thread. Were every thread taken by handlers waiting for that lock, the holder
# would wait for a thread and they for the lock, until SQLite's busy timeout answered them all 503. With a
# thread always left over, the holder finishes; the others wait for a session without holding a thread.
# A limiter belongs to one event loop (a test client runs each app in a loop of its own).
_SESSIONS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, anyio.CapacityLimiter] = weakref.WeakKeyDictionary()


def _session_slots() -> anyio.CapacityLimiter:
    loop = asyncio.get_running_loop()
    slots = _SESSIONS.get(loop)
    if slots is None:
        slots = _SESSIONS[loop] = anyio.CapacityLimiter(max(1, get_settings().web_threads - 1))
    return slots


async def _end(step: Callable[[], None]) -> None:
    with anyio.CancelScope(shield=True):
        await run_in_threadpool(step)


async def get_db() -> AsyncIterator[Session]:
    """The request owns the transaction: commit when the handler succeeds, roll back otherwise.

    The dependency's scope is the handler ("function"): the commit happens as the handler returns and before
    the response is sent, so a client never sees an answer whose writes could still fail. Every route that
    uses a session is a plain ``def`` run in a worker thread: no database call blocks the event loop, and
    nothing is awaited while a transaction is open (a form or an upload is read by an async dependency
    declared before the session, see app/core/forms.py). At most ``web_threads - 1`` requests hold a
    session at once (see ``_SESSIONS``)."""
    async with _session_slots():
        session = get_sessionmaker()()
        try:
            yield session
            await _end(session.commit)
        except (OperationalError, PoolTimeout) as exc:
            log.warning("database error: %s", exc)
            await _end(session.rollback)
            raise ServiceUnavailable(_("The database is not reachable right now; try again shortly.")) from exc
        except BaseException:
            await _end(session.rollback)
            raise
        finally:
            await _end(session.close)


SessionDep = Annotated[Session, Depends(get_db, scope="function")]


def commit_now(session: Session, *, undo: Callable[[], None] | None = None) -> None:
    """Commit in the handler's thread, for a handler that stored files beside its rows (an upload, an
    adapter). The session's own commit comes after the upload dependency has let go of its file; a commit
    that fails here still reaches that clean-up, and ``undo`` removes what the handler itself wrote."""
    try:
        session.commit()
    except BaseException:
        if undo is not None:
            undo()
        raise


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
