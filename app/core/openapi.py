"""Describing request bodies FastAPI cannot infer: the multipart forms our upload routes read themselves
(streamed, with limits) are declared to the OpenAPI schema here."""

from __future__ import annotations

from typing import Any

BINARY: dict[str, Any] = {"type": "string", "format": "binary"}


def multipart_body(properties: dict[str, dict[str, Any]], *, required: list[str]) -> dict[str, Any]:
    """An ``openapi_extra`` declaring a required multipart/form-data body with these fields."""
    schema = {"type": "object", "required": required, "properties": properties}
    return {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": schema}}}}
