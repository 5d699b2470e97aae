"""JSON API for the adapter registry and lineage."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Depends
from fastapi.responses import FileResponse, PlainTextResponse, Response, StreamingResponse
from pydantic import BaseModel, Field
from sqlalchemy.orm import Session

from app.adapters import exports, service, upload
from app.core.deps import SessionDep, commit_now, csrf_protect
from app.core.openapi import BINARY, multipart_body
from app.datasets.storage import remove_tree
from app.db.models import Run, User
from app.runs.schemas import RunRead
from app.users.deps import CurrentUser

router = APIRouter(prefix="/api/v1/adapters", tags=["adapters"], dependencies=[Depends(csrf_protect)])


class AdapterRead(BaseModel):
    job_id: uuid.UUID
    model: str = Field(description="The name to chat with it: /v1/chat/completions and the playground.")
    name: str
    base_model_id: uuid.UUID
    base_model: str | None
    method: str
    adapter: str
    dataset_id: uuid.UUID | None
    dataset_version_id: uuid.UUID | None = Field(description="None for an uploaded adapter.")
    dataset_version: int | None
    origin: str = Field(description="'trained' here, or 'upload' (an existing PEFT adapter imported).")
    spec: dict[str, Any]
    metrics: dict[str, Any]
    evaluation_id: uuid.UUID | None
    evaluation_scores: dict[str, Any] | None
    checkpoints: int
    size_bytes: int
    created_by: str
    created_at: datetime
    tags: list[str]
    merged: bool = Field(description="Whether the merged model is ready to download (merged.zip).")


class TagsWrite(BaseModel):
    tags: list[str] = Field(max_length=12)


def to_read(row: service.AdapterRow) -> AdapterRead:
    job = row.job
    return AdapterRead(
        job_id=job.id,
        model=row.name,
        name=job.name,
        base_model_id=job.base_model_id,
        base_model=row.model.name,
        method=str(job.spec.get("method")),
        adapter=str(job.spec.get("adapter")),
        dataset_id=row.dataset.id if row.dataset else None,
        dataset_version_id=job.dataset_version_id,
        dataset_version=row.version.number if row.version else None,
        origin=job.origin,
        spec=job.spec,
        metrics=row.metrics,
        evaluation_id=row.evaluation.id if row.evaluation else None,
        evaluation_scores=(row.evaluation.summary or {}).get("scores") if row.evaluation else None,
        checkpoints=row.checkpoints,
        size_bytes=row.size_bytes,
        created_by=row.owner,
        created_at=job.created_at,
        tags=list(job.tags or []),
        merged=service.merged_ready(job),
    )


def _ids(items: list[Any]) -> list[str]:
    return [str(item.id) for item in items]


def lineage_read(session: Session, row: service.AdapterRow, user: User) -> dict[str, Any]:
    found = service.lineage(session, row, user=user)
    job = row.job

    def trail(value: service.DatasetTrail | None) -> dict[str, Any] | None:
        if value is None:
            return None
        dataset = value.dataset
        return {
            "dataset_id": str(dataset.id),
            "dataset_name": dataset.name,
            "versions": [
                {
                    "id": str(v.id),
                    "number": v.number,
                    "source": v.source,
                    "records": v.record_count,
                    "skipped": v.skipped_count,
                }
                for v in value.versions
            ],
            "uploads": [
                {"id": str(u.id), "filename": u.filename, "size_bytes": u.size_bytes, "sha256": u.sha256}
                for u in value.uploads
            ],
            "validation": value.report,
        }

    return {
        "adapter": to_read(row).model_dump(mode="json"),
        "training_data": trail(found.training),
        "general_data": trail(found.general),
        "validation_data": trail(found.held_out),
        "reward_model_job_id": str(found.reward_model.id) if found.reward_model else None,
        "resumed_from_job_id": str(found.cloned_from.id) if found.cloned_from and job.resume_checkpoint else None,
        "cloned_from_job_id": str(found.cloned_from.id) if found.cloned_from and not job.resume_checkpoint else None,
        "evaluations": _ids(found.evaluations),
        "judgements": _ids(found.judgements),
        "feedback": found.feedback,
        "preference_datasets": [
            {"dataset_id": str(p.dataset.id), "trained_jobs": _ids(p.jobs)} for p in found.preference_datasets
        ],
        "continued_by": _ids(found.continued_by),
    }


ADAPTER_UPLOAD_BODY = multipart_body(
    {
        "model_id": {"type": "string", "format": "uuid", "description": "The base model it fits."},
        "name": {"type": "string"},
        "files": {
            "type": "array",
            "items": BINARY,
            "description": "adapter_config.json and adapter_model.safetensors, or one zip of them. "
            "Pickle files (.bin, .pt, …) are refused with 415.",
        },
    },
    required=["model_id", "files"],
)


class AdapterUploadRead(BaseModel):
    job_id: uuid.UUID = Field(description="The adapter's job: GET /api/v1/jobs/{job_id} shows the check's state.")
    name: str
    run: RunRead = Field(description="The run loading the adapter onto its base; listed once it has succeeded.")


@router.post(
    "",
    response_model=AdapterUploadRead,
    status_code=202,
    openapi_extra=ADAPTER_UPLOAD_BODY,
    summary="Upload an existing PEFT adapter (safetensors only); a background run checks it loads",
)
def upload_adapter(session: SessionDep, user: CurrentUser, form: upload.AdapterForm) -> AdapterUploadRead:
    job = upload.upload_from_form(form, session, user=user)
    commit_now(session, undo=lambda: remove_tree(job.storage_key))
    run = session.get(Run, job.run_id)
    return AdapterUploadRead(job_id=job.id, name=job.name, run=RunRead.model_validate(run))


@router.get("", response_model=list[AdapterRead], summary="Your adapters (succeeded jobs), optionally by tag")
def list_adapters(session: SessionDep, user: CurrentUser, tag: str = "") -> list[AdapterRead]:
    return [to_read(r) for r in service.list_adapters(session, user=user, tag=tag)]


@router.get("/{job_id}", response_model=AdapterRead, summary="One adapter")
def get_adapter(job_id: uuid.UUID, session: SessionDep, user: CurrentUser) -> AdapterRead:
    return to_read(service.get_adapter(session, job_id, user=user))


@router.get("/{job_id}/lineage", summary="Where an adapter came from and what was made from it")
def get_lineage(job_id: uuid.UUID, session: SessionDep, user: CurrentUser) -> dict[str, Any]:
    return lineage_read(session, service.get_adapter(session, job_id, user=user), user)


@router.post("/{job_id}/merge", response_model=RunRead, status_code=202, summary="Merge the adapter into its base")
def merge(job_id: uuid.UUID, session: SessionDep, user: CurrentUser) -> RunRead:
    run = service.start_merge(session, user=user, row=service.get_adapter(session, job_id, user=user))
    return RunRead.model_validate(run)


@router.get("/{job_id}/merged.zip", summary="The merged model (safetensors, tokenizer, model card)")
def merged_zip(job_id: uuid.UUID, session: SessionDep, user: CurrentUser) -> StreamingResponse:
    row = service.get_adapter(session, job_id, user=user)
    return StreamingResponse(
        service.merged_zip(session, row),
        media_type="application/zip",
        headers={"Content-Disposition": f'attachment; filename="refinery-merged-{job_id.hex[:8]}.zip"'},
    )


class GgufExportRead(BaseModel):
    format: str = Field(description="f16, q8_0, q4_0 (a whole model with an Ollama Modelfile) or lora.")
    refused: str | None = Field(description="Why this adapter has no export in this format; None when it can.")
    ready: bool
    file: str | None = Field(description="The .gguf file's name once ready.")
    size_bytes: int | None
    tensor_types: dict[str, int] | None = Field(description="How many tensors of each GGUF type the file holds.")
    template_left_out: str | None = Field(
        description="Why the Modelfile has no TEMPLATE (Ollama then reads the GGUF's chat template); None if it has."
    )
    run: RunRead | None = Field(description="The latest export run of this format.")


def gguf_reads(session: Session, row: service.AdapterRow) -> list[GgufExportRead]:
    return [
        GgufExportRead(
            format=state.format,
            refused=state.refused,
            ready=bool(state.facts),
            file=state.facts.get("file"),
            size_bytes=state.facts.get("size_bytes"),
            tensor_types=state.facts.get("tensor_types"),
            template_left_out=state.facts.get("template_left_out"),
            run=RunRead.model_validate(state.run) if state.run else None,
        )
        for state in exports.states(session, row)
    ]


@router.get("/{job_id}/gguf", response_model=list[GgufExportRead], summary="The adapter's GGUF exports, by format")
def list_gguf(job_id: uuid.UUID, session: SessionDep, user: CurrentUser) -> list[GgufExportRead]:
    return gguf_reads(session, service.get_adapter(session, job_id, user=user))


@router.post(
    "/{job_id}/gguf/{fmt}",
    response_model=RunRead,
    status_code=202,
    summary="Export as GGUF (f16, q8_0, q4_0 with an Ollama Modelfile, or the LoRA alone) in a background run",
)
def export_gguf(job_id: uuid.UUID, fmt: str, session: SessionDep, user: CurrentUser) -> RunRead:
    row = service.get_adapter(session, job_id, user=user)
    return RunRead.model_validate(exports.start(session, user=user, row=row, fmt=fmt))


@router.get("/{job_id}/gguf/{fmt}/archive.zip", summary="The .gguf, its Modelfile and the model card as a zip")
def gguf_archive(job_id: uuid.UUID, fmt: str, session: SessionDep, user: CurrentUser) -> StreamingResponse:
    row = service.get_adapter(session, job_id, user=user)
    return StreamingResponse(
        exports.archive(session, row, fmt),
        media_type="application/zip",
        headers={"Content-Disposition": f'attachment; filename="refinery-{job_id.hex[:8]}-{fmt}-gguf.zip"'},
    )


@router.get("/{job_id}/gguf/{fmt}/file", summary="The .gguf file alone (llama.cpp, LM Studio)")
def gguf_file(job_id: uuid.UUID, fmt: str, session: SessionDep, user: CurrentUser) -> FileResponse:
    path = exports.file_path(service.get_adapter(session, job_id, user=user), fmt)
    return FileResponse(path, media_type="application/octet-stream", filename=f"refinery-{job_id.hex[:8]}-{path.name}")


@router.get("/{job_id}/gguf/{fmt}/Modelfile", response_class=PlainTextResponse, summary="The Ollama Modelfile")
def gguf_modelfile(job_id: uuid.UUID, fmt: str, session: SessionDep, user: CurrentUser) -> str:
    return exports.modelfile(service.get_adapter(session, job_id, user=user), fmt)


@router.get("/{job_id}/dependents", summary="What deleting the adapter would remove, and what refers to it")
def get_dependents(job_id: uuid.UUID, session: SessionDep, user: CurrentUser) -> dict[str, Any]:
    found = service.dependents(session, service.get_adapter(session, job_id, user=user), user=user)
    return {
        "evaluations": _ids(found.evaluations),
        "judgements": _ids(found.judgements),
        "merged": found.merged,
        "resumed_by": _ids(found.resumed_by),
        "cloned_by": _ids(found.cloned_by),
        "reward_for": _ids(found.reward_for),
        "preference_datasets": found.preference_datasets,
        "running": _ids(found.running),
    }


@router.delete("/{job_id}", status_code=204, summary="Delete an adapter with its checkpoints and evaluations")
def delete_adapter(job_id: uuid.UUID, session: SessionDep, user: CurrentUser) -> Response:
    service.delete_adapter(session, service.get_adapter(session, job_id, user=user), user=user)
    return Response(status_code=204)


@router.put("/{job_id}/tags", response_model=AdapterRead, summary="Replace an adapter's tags")
def put_tags(job_id: uuid.UUID, body: TagsWrite, session: SessionDep, user: CurrentUser) -> AdapterRead:
    row = service.get_adapter(session, job_id, user=user)
    service.set_tags(row.job, body.tags)
    return to_read(row)
