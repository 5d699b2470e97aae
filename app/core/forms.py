"""Request bodies read before a handler runs, so that handlers are plain ``def`` functions.

Reading a body is awaited on the event loop; a handler's database work runs in a worker thread. These
dependencies do the awaiting, after who-is-asking has ended its read transaction (app/users/deps.py), so no
transaction is ever open while a body arrives. The CSRF check has usually parsed a page's form already
(Starlette keeps the first parse, with the limits it was given there)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import Depends, Request
from starlette.datastructures import FormData

from app.core.errors import InvalidInput
from app.core.i18n import _

MAX_FORM_FIELDS = 2000  # the recipe builder carries a whole recipe of up to 30 steps
MAX_FORM_FILES = 1  # a page form carries at most one small file (an exported job spec)


async def read_form(request: Request) -> AsyncIterator[FormData]:
    """The form as sent (fields and at most one file); its spooled files are closed after the handler."""
    form = await request.form(max_files=MAX_FORM_FILES, max_fields=MAX_FORM_FIELDS)
    try:
        yield form
    finally:
        await form.close()


FormDep = Annotated[FormData, Depends(read_form, scope="function")]


def text_fields(form: FormData) -> dict[str, str]:
    """The form's text fields (a repeated name keeps its last value)."""
    return {key: value for key, value in form.items() if isinstance(value, str)}


async def read_json_object(request: Request) -> dict[str, Any]:
    try:
        body = json.loads(await request.body())
    except ValueError as exc:
        raise InvalidInput(_("The request body must be JSON.")) from exc
    if not isinstance(body, dict):
        raise InvalidInput(_("The request body must be a JSON object."))
    return body


JsonObject = Annotated[dict[str, Any], Depends(read_json_object)]
