"""Pydantic's validation errors as sentences in the reader's language (the error type stays the code)."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import Query
from pydantic import Field

from app.core.i18n import N_, gettext

# Query parameters that are numbers carry their range, so odd values are a 400 naming them, never a 500.
PageNumber = Annotated[int, Query(ge=1, le=1_000_000, description="Page number, from 1.")]
AfterSequence = Annotated[int, Query(ge=-1, le=2**62, description="Only the rows after this sequence number.")]
MAX_SEED = 2**31 - 1
# OpenAI's ``metadata``: at most 16 pairs, keys up to 64 characters, values strings up to 512
Metadata = Annotated[
    dict[Annotated[str, Field(max_length=64)], Annotated[str, Field(max_length=512)]], Field(max_length=16)
]

SENTENCES = {
    "missing": N_("This field is required."),
    "greater_than": N_("Must be greater than %(gt)s."),
    "greater_than_equal": N_("Must be at least %(ge)s."),
    "less_than": N_("Must be less than %(lt)s."),
    "less_than_equal": N_("Must be at most %(le)s."),
    "int_parsing": N_("Must be a whole number."),
    "int_from_float": N_("Must be a whole number."),
    "float_parsing": N_("Must be a number."),
    "bool_parsing": N_("Must be true or false."),
    "enum": N_("Must be one of: %(expected)s."),
    "literal_error": N_("Must be one of: %(expected)s."),
    "string_pattern_mismatch": N_("Contains characters that are not allowed here."),
    "string_too_short": N_("Must have at least %(min_length)s characters."),
    "string_too_long": N_("Must have at most %(max_length)s characters."),
    "extra_forbidden": N_("This field is not part of the spec; remove it."),
    "uuid_parsing": N_("Must be an id (UUID)."),
}


def describe_error(error: dict[str, Any]) -> str:
    """``field: sentence`` for one pydantic error."""
    where = ("body", "query", "path", "header", "cookie")
    field = ".".join(str(p) for p in error.get("loc", ()) if p not in where)
    template = SENTENCES.get(str(error.get("type")))
    if template is None:
        sentence = str(error.get("msg", "invalid"))
    else:
        context = {
            k: (f"{v:g}" if isinstance(v, float) else v)
            for k, v in (error.get("ctx") or {}).items()
            if isinstance(v, str | int | float)
        }
        try:
            sentence = gettext(template, **context) if context else gettext(template)
        except (KeyError, ValueError):
            sentence = str(error.get("msg", "invalid"))
    return f"{field}: {sentence}" if field else sentence


def ticked_ids(values: list[str], *, most: int, unknown: str, count: str) -> list[uuid.UUID]:
    """The ids ticked on a list page for a comparison (two to ``most``, duplicates dropped); a value that is
    not an id is a 404 (``unknown``), a wrong number a 422 (``count``)."""
    from app.core.errors import InvalidInput, NotFound

    try:
        ids = list(dict.fromkeys(uuid.UUID(v) for v in values))
    except ValueError as exc:
        raise NotFound(unknown) from exc
    if not 2 <= len(ids) <= most:
        raise InvalidInput(count, field="id")
    return ids
