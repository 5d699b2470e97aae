"""Parsing the multipart upload with tight limits (one file, a few fields)."""

from __future__ import annotations

import json
import uuid
from typing import Any

from fastapi import Request
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from app.core.config import get_settings
from app.core.errors import InvalidInput
from app.core.i18n import _
from app.datasets.storage import StoredFile, save_stream

MAX_FIELDS = 20


async def read_upload_form(request: Request) -> tuple[StoredFile, str, dict[str, Any]]:
    form = await request.form(max_files=1, max_fields=MAX_FIELDS)
    try:
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise InvalidInput(_("Choose a file to upload (form field 'file')."), field="file")
        stored = await run_in_threadpool(save_stream, upload.file, limit=get_settings().max_upload_bytes)
        fields = {k: v for k, v in form.items() if isinstance(v, str)}
        return stored, upload.filename or "upload", fields
    finally:
        await form.close()


def parse_options(fields: dict[str, str]) -> dict[str, Any]:
    """Form/multipart strings into service options; bad values say which field."""
    options: dict[str, Any] = {
        "name": fields.get("name") or None,
        "record_format": fields.get("record_format") or None,
        "file_type": fields.get("file_type") or None,
    }
    if fields.get("model_id"):
        try:
            options["model_id"] = uuid.UUID(fields["model_id"])
        except ValueError as exc:
            raise InvalidInput(_("model_id must be a model id."), field="model_id") from exc
    ratios = {}
    for split in ("train", "validation", "test"):
        raw = fields.get(f"split_{split}")
        if raw not in (None, ""):
            try:
                ratios[split] = float(raw)
            except ValueError as exc:
                raise InvalidInput(
                    _("Split ratios are numbers ≥ 0 for train, validation and test."), field=f"split_{split}"
                ) from exc
    if ratios:
        options["ratios"] = ratios
    if fields.get("seed"):
        try:
            options["seed"] = int(fields["seed"])
        except ValueError as exc:
            raise InvalidInput(_("The seed is a whole number."), field="seed") from exc
    mapping = {k.removeprefix("map_"): v for k, v in fields.items() if k.startswith("map_") and v}
    if fields.get("column_mapping"):
        try:
            loaded = json.loads(fields["column_mapping"])
        except ValueError as exc:
            raise InvalidInput(_("column_mapping must be a JSON object."), field="column_mapping") from exc
        if not isinstance(loaded, dict):
            raise InvalidInput(_("column_mapping must be a JSON object."), field="column_mapping")
        mapping |= {str(k): str(v) for k, v in loaded.items()}
    if mapping:
        options["mapping"] = mapping
    return options
