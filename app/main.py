"""create_app() and the lifespan; everything else lives in the domain packages."""

from __future__ import annotations

import errno
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import anyio.to_thread
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.sessions import SessionMiddleware

from app.core import i18n
from app.core.config import get_settings
from app.core.errors import InsufficientStorage, InvalidInput, RefineryError
from app.core.i18n import _
from app.core.limits import BodyLimitMiddleware
from app.core.templating import ROOT, render
from app.core.validation import describe_error
from app.users.deps import LoginRequired

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
)
API_PREFIXES = ("/api/", "/v1/", "/healthz")
SWITCH_INTERVAL = 0.001


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    from app.db.migrations import verify_schema_at_head
    from app.db.session import get_engine

    settings = get_settings()
    settings.ensure_dirs()
    verify_schema_at_head(get_engine())
    # The event loop shares the interpreter lock with the request threads. Under a burst (a login flood)
    # forty busy threads (Starlette's default) each kept it for the default 5 ms, so the loop waited a second
    # or more between steps and even /healthz answered late. Fewer threads and a shorter switch interval
    # let it in sooner; the database pool has a connection for every thread.
    sys.setswitchinterval(SWITCH_INTERVAL)
    anyio.to_thread.current_default_thread_limiter().total_tokens = settings.web_threads
    yield


def _is_api(request: Request) -> bool:
    """JSON errors for the APIs and for the pages' own JSON requests (the playground's fetch calls)."""
    return request.url.path.startswith(API_PREFIXES) or request.headers.get("content-type", "").startswith(
        "application/json"
    )


def create_app() -> FastAPI:
    settings = get_settings()
    from app.core.templating import templates
    from app.runs import messages as run_messages

    # the composition root gives the (domain-free) templates what the domains render with
    templates.env.globals["run_text"] = run_messages.describe
    app = FastAPI(
        title="Refinery",
        version="0.1.0",
        description="Self-hosted fine-tuning platform. JSON API under /api/v1; "
        "authenticate with 'Authorization: Bearer <API key>'.",
        lifespan=lifespan,
        # The interactive docs pages load their scripts from a CDN; serve only the schema itself.
        docs_url=None,
        redoc_url=None,
    )

    @app.middleware("http")
    async def locale_and_headers(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        chosen = request.session.get("locale") if "session" in request.scope else None
        i18n.set_locale(chosen or i18n.negotiate(request.headers.get("accept-language")))
        response = await call_next(request)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault("Content-Security-Policy", CSP)
        return response

    app.add_middleware(
        BodyLimitMiddleware,
        default_limit=settings.max_request_bytes,
        upload_limit=settings.max_upload_bytes + 64 * 1024,  # the file plus the form's other fields
        upload_paths=(
            "/api/v1/datasets",
            "/api/v1/datasets/*/upload",
            "/datasets/*/upload",
            "/v1/files",
            "/api/v1/adapters",
            "/adapters/upload",
        ),
    )
    app.add_middleware(
        SessionMiddleware,
        secret_key=settings.resolved_secret_key(),
        session_cookie="refinery_session",
        max_age=settings.session_max_age_seconds,
        same_site="lax",
        https_only=settings.https_cookies,
    )

    @app.exception_handler(RefineryError)
    async def domain_error(request: Request, exc: RefineryError) -> Response:
        response = _domain_error(request, exc)
        if exc.retry_after:
            response.headers["Retry-After"] = str(exc.retry_after)
        return response

    def _domain_error(request: Request, exc: RefineryError) -> Response:
        if request.url.path.startswith("/v1/"):  # OpenAI's error shape, for its clients
            status = 400 if exc.status_code == 422 else exc.status_code
            kind = {
                401: "authentication_error",
                403: "permission_error",
                404: "invalid_request_error",
                429: "rate_limit_error",
            }
            body = {"message": exc.message, "type": kind.get(status, "invalid_request_error"), "param": exc.field}
            return JSONResponse({"error": {**body, "code": exc.code}}, status_code=status)
        if _is_api(request):
            return JSONResponse(
                {"error": {"code": exc.code, "message": exc.message, "field": exc.field}},
                status_code=exc.status_code,
                headers={"WWW-Authenticate": "Bearer"} if exc.status_code == 401 else None,
            )
        if request.headers.get("hx-request") == "true":
            return render(
                request,
                "_toast.html",
                {"message": exc.message, "level": "error"},
                status_code=exc.status_code,
                headers={"HX-Reswap": "none"},
            )
        if exc.status_code == 401:
            return RedirectResponse("/login", status_code=303)
        return render(
            request,
            "error.html",
            {"message": exc.message, "status": exc.status_code},
            status_code=exc.status_code,
        )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        codes = {404: "not_found", 405: "method_not_allowed", 413: "too_large"}
        error = RefineryError(str(exc.detail), code=codes.get(exc.status_code, "bad_request"))
        error.status_code = exc.status_code
        return await domain_error(request, error)

    @app.exception_handler(OSError)
    async def storage_error(request: Request, exc: OSError) -> Response:
        """A full disk while a request body is spooled or stored: 507, and the temporary files are gone."""
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            raise exc
        message = _("The server is out of disk space; nothing was stored.")
        return await domain_error(request, InsufficientStorage(message))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> Response:
        first = exc.errors()[0] if exc.errors() else {}
        field = ".".join(str(p) for p in first.get("loc", ())[1:]) or None
        message = describe_error(dict(first)) if first else "invalid request"
        return await domain_error(request, InvalidInput(message, code="invalid_request", field=field))

    @app.exception_handler(LoginRequired)
    async def login_required(request: Request, exc: LoginRequired) -> Response:
        from app.db.session import get_sessionmaker
        from app.users.service import user_count

        with get_sessionmaker()() as session:
            target = "/setup" if user_count(session) == 0 else "/login"
        if request.headers.get("hx-request") == "true":
            return Response(status_code=204, headers={"HX-Redirect": target})
        return RedirectResponse(target, status_code=303)

    app.mount("/static", StaticFiles(directory=str(ROOT / "static")), name="static")

    from app.adapters import api as adapters_api
    from app.adapters import ui as adapters_ui
    from app.basemodels import api as models_api
    from app.basemodels import ui as models_ui
    from app.cleaning import api as cleaning_api
    from app.cleaning import ui as cleaning_ui
    from app.core import health
    from app.datasets import api as datasets_api
    from app.datasets import ui as datasets_ui
    from app.deployments import api as deployments_api
    from app.deployments import ui as deployments_ui
    from app.evaluation import api as evaluation_api
    from app.evaluation import ui as evaluation_ui
    from app.graders import api as graders_api
    from app.jobs import api as jobs_api
    from app.jobs import ui as jobs_ui
    from app.openai_api import evals as openai_evals
    from app.openai_api import fine_tuning as openai_fine_tuning
    from app.openai_api import graders as openai_graders
    from app.openai_api import models as openai_models
    from app.openai_api import routes as openai_api
    from app.openai_api import stored as openai_stored
    from app.playground import api as playground_api
    from app.playground import ui as playground_ui
    from app.runs import api as runs_api
    from app.runs import ui as runs_ui
    from app.traffic import api as traffic_api
    from app.traffic import ui as traffic_ui
    from app.users import api as users_api
    from app.users import ui as users_ui

    for module in (
        health,
        users_ui,
        users_api,
        models_ui,
        models_api,
        runs_api,
        runs_ui,
        datasets_ui,
        datasets_api,
        cleaning_ui,
        cleaning_api,
        jobs_ui,
        jobs_api,
        evaluation_ui,
        evaluation_api,
        graders_api,
        playground_ui,
        playground_api,
        openai_api,
        openai_models,
        openai_fine_tuning,
        openai_graders,
        openai_evals,
        openai_stored,
        traffic_ui,
        traffic_api,
        deployments_ui,
        deployments_api,
        adapters_ui,
        adapters_api,
    ):
        app.include_router(module.router)
    app.include_router(jobs_api.preset_router)
    return app
