"""Importing an existing PEFT adapter (LoRA, DoRA or IA3) to evaluate or serve it.

Only safetensors are accepted: a pickle file anywhere in the upload refuses the whole upload with 415. The
safetensors header is read and checked (length, JSON, dtypes, shapes against byte ranges, no overlaps or
trailing bytes, tensor names of a PEFT adapter) before anything loads the file. A background run then loads the
adapter onto the chosen base model with PEFT and runs one forward pass; only when that succeeds is the adapter
listed, so a rank or layer mismatch is a failed run with PEFT's message rather than a broken adapter.
"""

from __future__ import annotations

import json
import shutil
import uuid
import zipfile
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Annotated, Any, BinaryIO

from fastapi import Depends, Request
from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.datastructures import FormData, UploadFile

from app.basemodels import service as models
from app.core.config import get_settings
from app.core.errors import InvalidInput, TooLarge, UnsupportedMedia
from app.core.i18n import _
from app.datasets.storage import artifact_path
from app.db.models import ModelStatus, Run, RunStatus, TrainingJob, User
from app.jobs.spec import Adapter, Method, TrainingSpec
from app.runs import service as runs

IMPORT_KIND = "adapter_import"
CONFIG = "adapter_config.json"
WEIGHTS = "adapter_model.safetensors"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".joblib")
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "merges.txt",
    "tokenizer.model",
    "chat_template.jinja",
)
MAX_CONFIG_BYTES = 1 << 20
MAX_HEADER_BYTES = 100 << 20
DTYPE_BYTES = {
    "F64": 8,
    "F32": 4,
    "F16": 2,
    "BF16": 2,
    "F8_E4M3": 1,
    "F8_E5M2": 1,
    "I64": 8,
    "I32": 4,
    "I16": 2,
    "I8": 1,
    "U8": 1,
    "BOOL": 1,
}
PEFT_TENSOR_MARKERS = ("lora_A", "lora_B", "lora_embedding_A", "lora_embedding_B", "lora_magnitude_vector", "ia3_l")


@dataclass(frozen=True)
class CheckedAdapter:
    config: dict[str, Any]
    tensors: int
    parameters: int


def refuse_pickle(names: Iterable[str]) -> None:
    for name in names:
        if PurePosixPath(name).suffix.lower() in PICKLE_SUFFIXES:
            raise UnsupportedMedia(
                _(
                    "%(name)s is a pickle file; Refinery never loads pickle weights, which can run code. Save the "
                    "adapter with safetensors (model.save_pretrained(dir, safe_serialization=True)) and upload "
                    "adapter_config.json with adapter_model.safetensors.",
                    name=PurePosixPath(name).name[:120],
                ),
                field="files",
            )


def check_safetensors(path: Path) -> tuple[int, int]:
    """(tensors, parameters) of a safetensors file whose header is sound; InvalidInput saying what is wrong."""

    def bad(reason: str) -> InvalidInput:
        return InvalidInput(
            _("%(file)s is not a valid safetensors file: %(reason)s", file=WEIGHTS, reason=reason), field="files"
        )

    size = path.stat().st_size
    with path.open("rb") as handle:
        prefix = handle.read(8)
        if len(prefix) < 8:
            raise bad(_("it is shorter than the 8-byte header length."))
        length = int.from_bytes(prefix, "little")
        if length < 2 or length > MAX_HEADER_BYTES or 8 + length > size:
            raise bad(_("the header length (%(n)s bytes) does not fit the file.", n=f"{length:,}"))
        try:
            header = json.loads(handle.read(length))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise bad(_("the header is not JSON.")) from None
    if not isinstance(header, dict):
        raise bad(_("the header is not a JSON object."))
    data_bytes = size - 8 - length
    spans: list[tuple[int, int]] = []
    parameters = 0
    tensors = 0
    for name, entry in header.items():
        if name == "__metadata__":
            if not isinstance(entry, dict) or not all(isinstance(v, str) for v in entry.values()):
                raise bad(_("__metadata__ must map names to strings."))
            continue
        if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data_offsets"}:
            raise bad(_("tensor %(name)s must have exactly dtype, shape and data_offsets.", name=name[:100]))
        dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
        if dtype not in DTYPE_BYTES:
            raise bad(_("tensor %(name)s has an unknown dtype %(dtype)s.", name=name[:100], dtype=str(dtype)[:20]))
        if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
            raise bad(_("tensor %(name)s has a malformed shape.", name=name[:100]))
        if (
            not isinstance(offsets, list)
            or len(offsets) != 2
            or not all(isinstance(o, int) for o in offsets)
            or not 0 <= offsets[0] <= offsets[1] <= data_bytes
        ):
            raise bad(_("tensor %(name)s points outside the file.", name=name[:100]))
        count = 1
        for dim in shape:
            count *= dim
        if count * DTYPE_BYTES[dtype] != offsets[1] - offsets[0]:
            raise bad(_("tensor %(name)s's byte range does not match its shape and dtype.", name=name[:100]))
        if not any(marker in name for marker in PEFT_TENSOR_MARKERS):
            raise bad(_("tensor %(name)s is not a LoRA, DoRA or IA3 weight; upload a PEFT adapter.", name=name[:100]))
        spans.append((offsets[0], offsets[1]))
        parameters += count
        tensors += 1
    if not tensors:
        raise bad(_("it holds no tensors."))
    end = 0
    for start, stop in sorted(spans):
        if start != end:
            raise bad(_("its tensors overlap or leave gaps."))
        end = stop
    if end != data_bytes:
        raise bad(_("it has %(n)s bytes after the last tensor.", n=f"{data_bytes - end:,}"))
    return tensors, parameters


def check_config(path: Path) -> dict[str, Any]:
    """adapter_config.json of a LoRA (or DoRA) or IA3 adapter for a causal language model."""

    def bad(reason: str) -> InvalidInput:
        return InvalidInput(_("%(file)s: %(reason)s", file=CONFIG, reason=reason), field="files")

    if path.stat().st_size > MAX_CONFIG_BYTES:
        raise bad(_("the file is larger than 1 MiB; it is not a PEFT adapter configuration."))
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise bad(_("not valid JSON (%(error)s).", error=str(exc)[:200])) from None
    if not isinstance(config, dict):
        raise bad(_("not a JSON object."))
    peft_type = str(config.get("peft_type", "")).upper()
    if peft_type not in ("LORA", "IA3"):
        raise bad(
            _(
                "peft_type is %(type)s; LoRA (with or without DoRA) and IA3 adapters can be uploaded.",
                type=str(config.get("peft_type"))[:40],
            )
        )
    task = config.get("task_type")
    if task not in (None, "CAUSAL_LM"):
        raise bad(_("task_type is %(task)s; only CAUSAL_LM adapters can be evaluated and served.", task=str(task)[:40]))
    if peft_type == "LORA":
        rank, alpha = config.get("r"), config.get("lora_alpha")
        if not isinstance(rank, int) or rank < 1 or not isinstance(alpha, int | float) or alpha <= 0:
            raise bad(_("r must be a positive integer and lora_alpha a positive number."))
    if config.get("auto_mapping") or config.get("revision"):
        raise bad(_("auto_mapping and revision are not supported; remove them from the configuration."))
    return config


def spec_for(config: dict[str, Any]) -> TrainingSpec:
    """The spec shown for an uploaded adapter: what its configuration says about it (nothing was trained)."""
    targets = config.get("target_modules")
    if isinstance(targets, list):
        names = ",".join(str(t) for t in targets)
    elif isinstance(targets, str) and targets:
        names = targets
    else:
        names = "all-linear"
    values: dict[str, Any] = {"method": Method.sft, "adapter": Adapter.lora}
    if str(config.get("peft_type")).upper() == "IA3":
        values["adapter"] = Adapter.ia3
    else:
        values.update(
            lora_r=min(int(config["r"]), 1024),
            lora_alpha=min(max(int(config["lora_alpha"]), 1), 4096),
            lora_dropout=min(max(float(config.get("lora_dropout") or 0.0), 0.0), 0.99),
            use_dora=bool(config.get("use_dora")),
            use_rslora=bool(config.get("use_rslora")),
        )
    try:
        return TrainingSpec(**values, lora_target_modules=names[:500])
    except ValueError:
        # target modules given as a regular expression: shown as all-linear, PEFT applies the real pattern
        return TrainingSpec(**values)


def _copy_limited(source: IO[bytes], target: Path, *, limit: int, total: list[int]) -> None:
    with target.open("wb") as out:
        while chunk := source.read(1 << 20):
            total[0] += len(chunk)
            if total[0] > limit:
                raise TooLarge(_("The adapter is larger than the upload limit of %(n)s bytes.", n=f"{limit:,}"))
            out.write(chunk)


def unpack(files: list[tuple[str, BinaryIO]], target: Path, *, limit: int) -> None:
    """Put adapter_config.json and adapter_model.safetensors into target from the uploaded files: the two files
    themselves, or a zip holding them (in any one folder). Other files are ignored; pickle files refuse it all."""
    refuse_pickle(name for name, _stream in files)
    target.mkdir(parents=True, exist_ok=True)
    total = [0]
    for name, stream in files:
        base = PurePosixPath(name.replace("\\", "/")).name
        if base in (CONFIG, WEIGHTS):
            _copy_limited(stream, target / base, limit=limit, total=total)
        elif base.lower().endswith(".zip"):
            try:
                archive = zipfile.ZipFile(stream)
            except zipfile.BadZipFile:
                raise InvalidInput(_("%(name)s is not a readable zip file.", name=base[:120]), field="files") from None
            with archive:
                members = [m for m in archive.infolist() if not m.is_dir()]
                refuse_pickle(m.filename for m in members)
                for wanted in (CONFIG, WEIGHTS):
                    found = [m for m in members if PurePosixPath(m.filename).name == wanted]
                    if len(found) > 1:
                        raise InvalidInput(
                            _("The zip holds %(n)s copies of %(file)s; zip one adapter.", n=len(found), file=wanted),
                            field="files",
                        )
                    if found:
                        if found[0].file_size > limit:
                            raise TooLarge(
                                _("The adapter is larger than the upload limit of %(n)s bytes.", n=f"{limit:,}")
                            )
                        with archive.open(found[0]) as member:
                            _copy_limited(member, target / wanted, limit=limit, total=total)
    missing = [name for name in (CONFIG, WEIGHTS) if not (target / name).is_file()]
    if missing:
        raise InvalidInput(
            _(
                "The upload has no %(files)s. Upload the adapter's adapter_config.json and adapter_model.safetensors "
                "(as two files or in one zip).",
                files=" or ".join(missing),
            ),
            field="files",
        )


def import_adapter(
    session: Session,
    *,
    user: User,
    name: str,
    model_id: uuid.UUID,
    files: list[tuple[str, BinaryIO]],
    limit: int,
) -> TrainingJob:
    """Check the files, store them as a job's final adapter and queue the run that loads it onto the base."""
    model = models.get_model(session, model_id, user=user)
    if model.status != ModelStatus.ready or not model.storage_key:
        raise InvalidInput(_("That model is not ready yet; wait for its import to finish."), field="model_id")
    if not files:
        raise InvalidInput(
            _("Choose the adapter's files: adapter_config.json and adapter_model.safetensors, or a zip of them."),
            field="files",
        )
    staging = artifact_path(f"uploads/adapter-{uuid.uuid4().hex}")
    try:
        unpack(files, staging, limit=limit)
        config = check_config(staging / CONFIG)
        check_safetensors(staging / WEIGHTS)
        spec = spec_for(config)
        job = TrainingJob(
            owner_id=user.id,
            name=(name.strip() or f"{model.name} · uploaded adapter")[:200],
            base_model_id=model.id,
            dataset_version_id=None,
            origin="upload",
            spec=spec.model_dump(mode="json"),
            storage_key="",
        )
        session.add(job)
        session.flush()
        job.storage_key = f"jobs/{job.id.hex}"
        final = artifact_path(f"{job.storage_key}/final")
        final.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(final, ignore_errors=True)
        staging.rename(final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    model_dir = artifact_path(model.storage_key)
    for tokenizer_file in TOKENIZER_FILES:
        if (model_dir / tokenizer_file).is_file():
            shutil.copyfile(model_dir / tokenizer_file, final / tokenizer_file)
    run = runs.create_run(session, kind=IMPORT_KIND, owner=user, params={"job_id": str(job.id)}, queue="gpu")
    job.run_id = run.id
    session.flush()
    return job


async def read_adapter_form(request: Request) -> AsyncIterator[FormData]:
    """The multipart form of the page and the API: model_id, name, and the adapter's files (field 'files')."""
    form = await request.form(max_files=4, max_fields=6)
    try:
        yield form
    finally:
        await form.close()


AdapterForm = Annotated[FormData, Depends(read_adapter_form, scope="function")]


def upload_from_form(form: FormData, session: Session, *, user: User) -> TrainingJob:
    raw_model = str(form.get("model_id") or "")
    try:
        model_id = uuid.UUID(raw_model)
    except ValueError:
        raise InvalidInput(_("Choose the base model the adapter was trained on."), field="model_id") from None
    files = [
        (item.filename or "upload", item.file)
        for item in form.getlist("files")
        if isinstance(item, UploadFile) and item.filename
    ]
    return import_adapter(
        session,
        user=user,
        name=str(form.get("name") or ""),
        model_id=model_id,
        files=files,
        limit=get_settings().max_upload_bytes,
    )


def pending_uploads(session: Session, *, user: User) -> list[tuple[TrainingJob, Run]]:
    """Uploaded adapters still being checked, or whose check failed (with the reason), newest first."""
    rows = []
    for job in session.scalars(
        select(TrainingJob)
        .where(TrainingJob.owner_id == user.id, TrainingJob.origin == "upload")
        .order_by(TrainingJob.created_at.desc())
    ):
        run = session.get(Run, job.run_id) if job.run_id else None
        if run is not None and run.status != RunStatus.succeeded:
            rows.append((job, run))
    return rows
