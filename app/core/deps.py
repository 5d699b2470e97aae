"""Request dependencies of the core: the request-scoped database session and the CSRF check. Who is asking
(cookie or API key) is the users package's: app/users/deps.py."""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable, Iterable, Iterator
from typing import Annotated, Any
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
    """The request owns the transaction: commit when the handler succeeds, roll back otherwise."""
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


SessionDep = Annotated[Session, Depends(get_db)]


def end_transactions_in_handlers(routes: Iterable[Any]) -> None:
    """Commit (or roll back) a request's transaction as its handler returns (or raises), in the handler's
    own thread, instead of in get_db's teardown.

    FastAPI runs a sync handler in a worker thread and get_db's teardown later, scheduled through the event
    loop. On SQLite (one writer at a time) an async handler that waits for the write lock blocks the loop,
    so the request holding the lock could never reach its commit: both waited out the busy timeout and
    answered "database is locked". Ending the transaction where the handler ran frees the lock without the
    loop. get_db's own commit then finds nothing to do."""
    for route in routes:
        endpoint = getattr(route, "endpoint", None)
        dependant = getattr(route, "dependant", None)
        if endpoint is None or dependant is None or "session" not in inspect.signature(endpoint).parameters:
            continue
        if getattr(endpoint, "ends_transaction", False):
            continue  # the routers are module-level: a second create_app() finds them wrapped already
        # included routers build their effective routes from the endpoint at the first request
        route.endpoint = dependant.call = _ending_transaction(endpoint)


def _end(session: Session, ok: bool) -> None:
    if ok:
        session.commit()
    else:
        session.rollback()


def _ending_transaction(call: Callable[..., Any]) -> Callable[..., Any]:
    if inspect.iscoroutinefunction(call):

        @functools.wraps(call)
        async def run_async(**values: Any) -> Any:
            try:
                result = await call(**values)
            except BaseException:
                _end(values["session"], ok=False)
                raise
            _end(values["session"], ok=True)
            return result

        run_async.ends_transaction = True  # type: ignore[attr-defined]
        return run_async

    @functools.wraps(call)
    def run(**values: Any) -> Any:
        try:
            result = call(**values)
        except BaseException:
            _end(values["session"], ok=False)
            raise
        _end(values["session"], ok=True)
        return result

    run.ends_transaction = True  # type: ignore[attr-defined]
    return run


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
