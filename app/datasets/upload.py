"""Parsing the multipart upload with tight limits (one file, a few fields)."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Request
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from app.core.config import get_settings
from app.core.errors import InvalidInput
from app.core.i18n import _
from app.datasets.storage import StoredFile, discard, save_stream

MAX_FIELDS = 20


SPLIT_FILE_FIELDS = {"validation_file": "validation", "test_file": "test"}


@dataclass(frozen=True)
class ReceivedForm:
    stored: StoredFile
    filename: str
    fields: dict[str, str]
    # separate files for the validation and/or test split: split -> (stored file, file name)
    split_files: dict[str, tuple[StoredFile, str]]


@asynccontextmanager
async def upload_form(request: Request) -> AsyncIterator[ReceivedForm]:
    """One main file (field 'file'), optionally 'validation_file' and 'test_file', and a few fields.
    The stored files are removed again when the block raises (a refused upload leaves nothing behind)."""
    form = await request.form(max_files=1 + len(SPLIT_FILE_FIELDS), max_fields=MAX_FIELDS)
    limit = get_settings().max_upload_bytes
    kept: list[StoredFile] = []
    try:
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise InvalidInput(_("Choose a file to upload (form field 'file')."), field="file")
        stored = await run_in_threadpool(save_stream, upload.file, limit=limit)
        kept.append(stored)
        split_files = {}
        for field_name, split in SPLIT_FILE_FIELDS.items():
            extra = form.get(field_name)
            if isinstance(extra, UploadFile) and extra.filename:
                split_files[split] = (await run_in_threadpool(save_stream, extra.file, limit=limit), extra.filename)
                kept.append(split_files[split][0])
        fields = {k: v for k, v in form.items() if isinstance(v, str)}
        received = ReceivedForm(stored, upload.filename or "upload", fields, split_files)
    except BaseException:
        discard(*kept)
        raise
    finally:
        await form.close()
    try:
        yield received
    except BaseException:
        discard(*kept)
        raise


async def received_upload(request: Request) -> AsyncIterator[ReceivedForm]:
    """The upload as a dependency: stored before the (plain ``def``) handler runs, removed again if the
    handler fails. Declared after the user, whose lookup has ended its transaction (no transaction is open
    while the file arrives)."""
    async with upload_form(request) as received:
        yield received


ReceivedUpload = Annotated[ReceivedForm, Depends(received_upload, scope="function")]


def parse_options(fields: dict[str, str]) -> dict[str, Any]:
    """Form/multipart strings into service options; bad values say which field."""
    options: dict[str, Any] = {
        "name": fields.get("name") or None,
        "record_format": fields.get("record_format") or None,
        "file_type": fields.get("file_type") or None,
    }
    if fields.get("text_split"):
        options["text_split"] = fields["text_split"]
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
