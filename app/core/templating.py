"""Jinja2 templates with gettext, CSRF token, locale-aware formatting and pinned static assets."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jinja2
from fastapi import Request
from fastapi.templating import Jinja2Templates
from starlette.responses import HTMLResponse, Response

from app.core import i18n
from app.core.security import new_csrf_token

ROOT = Path(__file__).resolve().parents[2]
_env = jinja2.Environment(
    loader=jinja2.FileSystemLoader(str(ROOT / "templates")),
    autoescape=True,
    extensions=["jinja2.ext.i18n"],
)
templates = Jinja2Templates(env=_env)
_env.install_gettext_callables(  # type: ignore[attr-defined]
    lambda message: i18n.translations(i18n.get_locale()).gettext(message),
    lambda singular, plural, n: i18n.translations(i18n.get_locale()).ngettext(singular, plural, n),
    newstyle=True,
)
templates.env.globals.update(
    LOCALES=i18n.LOCALES,
    format_dt=i18n.format_dt,
    format_number=i18n.format_number,
    HTMX="vendor/htmx-2.0.11.min.js",
    UPLOT_JS="vendor/uPlot-1.6.32.iife.min.js",
    UPLOT_CSS="vendor/uPlot-1.6.32.min.css",
)


def csrf_token(request: Request) -> str:
    token = request.session.get("csrf")
    if not token:
        token = new_csrf_token()
        request.session["csrf"] = token
    return str(token)


def render(
    request: Request,
    name: str,
    context: dict[str, Any] | None = None,
    *,
    status_code: int = 200,
    headers: dict[str, str] | None = None,
) -> HTMLResponse:
    ctx = {
        "csrf_token": csrf_token(request),
        "user": getattr(request.state, "user", None),
        "locale": i18n.get_locale(),
        "is_htmx": request.headers.get("hx-request") == "true",
    }
    ctx.update(context or {})
    return templates.TemplateResponse(request, name, ctx, status_code=status_code, headers=headers)


def render_live(request: Request, name: str, context: dict[str, Any], *, live: bool) -> Response:
    """A fragment that a page polls while background work runs; once the work is over, 204 with HX-Refresh
    so that the whole page reloads with the result."""
    if not live:
        return Response(status_code=204, headers={"HX-Refresh": "true"})
    return render(request, name, context)


def human_bytes(value: int | None) -> str:
    if value is None:
        return "—"
    size = float(value)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if size < 1024 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TB"


def human_count(value: int | None) -> str:
    if value is None:
        return "—"
    for threshold, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if value >= threshold:
            return f"{value / threshold:.1f}{suffix}"
    return str(value)


def human_duration(seconds: float | None) -> str:
    """A run's length as people say it: '45 s', '3 min 20 s', '2 h 05 min' ('—' when unknown)."""
    if seconds is None or seconds < 0:
        return "—"
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return i18n.gettext("%(h)s h %(m)s min", h=hours, m=f"{minutes:02d}")
    if minutes:
        return i18n.gettext("%(m)s min %(s)s s", m=minutes, s=f"{secs:02d}")
    return i18n.gettext("%(s)s s", s=secs)


def json_text(value: Any, indent: int | None = None) -> str:
    """A value as JSON to read on a page (non-ASCII kept; the page's escaping makes it safe, unlike tojson's
    \\u003c escapes, which are meant for scripts and show as such in text)."""
    return json.dumps(value, ensure_ascii=False, indent=indent)


templates.env.filters["bytes"] = human_bytes
templates.env.filters["json_text"] = json_text
templates.env.filters["duration"] = human_duration
templates.env.filters["count"] = human_count
