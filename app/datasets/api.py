"""JSON API for datasets: upload, validation report, versions, records, download."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Depends
from fastapi.responses import StreamingResponse
from sqlalchemy.orm import Session

from app.core.deps import SessionDep, commit_now, csrf_protect
from app.core.openapi import BINARY, multipart_body
from app.core.validation import MAX_SEED, PageNumber
from app.datasets import records, service
from app.datasets.schemas import (
    DatasetRead,
    DatasetVersionRead,
    IssuePage,
    IssueRead,
    RecordPage,
    RecordRead,
    ValidationOptions,
)
from app.datasets.upload import ReceivedUpload, parse_options
from app.db.models import Dataset
from app.runs.schemas import RunRead
from app.users.deps import CurrentUser

router = APIRouter(prefix="/api/v1/datasets", tags=["datasets"], dependencies=[Depends(csrf_protect)])

UPLOAD_BODY = multipart_body(
    {
        "file": {**BINARY, "description": "JSONL, JSON array, CSV, Parquet, .txt/.md; optionally gzip-compressed."},
        "name": {"type": "string"},
        "model_id": {"type": "string", "format": "uuid"},
        "record_format": {"type": "string"},
        "file_type": {"type": "string"},
        "validation_file": {**BINARY, "description": "Optional: a separate file for the validation split."},
        "test_file": {**BINARY, "description": "Optional: a separate file for the test split."},
        "split_train": {"type": "number", "minimum": 0, "maximum": 100},
        "split_validation": {"type": "number", "minimum": 0, "maximum": 100},
        "split_test": {"type": "number", "minimum": 0, "maximum": 100},
        "seed": {"type": "integer", "minimum": 0, "maximum": MAX_SEED},
        "column_mapping": {"type": "string", "description": "JSON object: record field → column."},
        "text_split": {"type": "string", "enum": ["lines", "paragraphs", "document"]},
    },
    required=["file"],
)


def to_read(session: Session, dataset: Dataset) -> DatasetRead:
    run = service.validation_run(session, dataset)
    data = {c.key: getattr(dataset, c.key) for c in Dataset.__table__.columns}
    data["filename"] = service.get_upload(session, dataset).filename
    data["split_files"] = {split: u.filename for split, u in service.split_uploads(session, dataset).items()}
    data["validation_run"] = RunRead.model_validate(run) if run else None
    data["versions"] = [DatasetVersionRead.model_validate(v) for v in service.versions(session, dataset)]
    return DatasetRead.model_validate(data)


@router.post(
    "",
    response_model=DatasetRead,
    status_code=202,
    openapi_extra=UPLOAD_BODY,
    summary="Upload a file; validation runs in the background",
)
def upload_dataset(session: SessionDep, user: CurrentUser, received: ReceivedUpload) -> DatasetRead:
    options = parse_options(received.fields)
    dataset = service.create_dataset(
        session,
        user=user,
        stored=received.stored,
        filename=received.filename,
        split_files=received.split_files,
        **options,
    )
    commit_now(session)
    return to_read(session, dataset)


@router.get("", response_model=list[DatasetRead], summary="Your datasets")
def list_datasets(session: SessionDep, user: CurrentUser) -> list[DatasetRead]:
    return [to_read(session, d) for d in service.list_datasets(session, user=user)]


@router.get("/{dataset_id}", response_model=DatasetRead, summary="A dataset with its versions")
def get_dataset(dataset_id: uuid.UUID, session: SessionDep, user: CurrentUser) -> DatasetRead:
    return to_read(session, service.get_dataset(session, dataset_id, user=user))


@router.get("/{dataset_id}/report", response_model=IssuePage, summary="Validation issues, by line")
def report(
    dataset_id: uuid.UUID, session: SessionDep, user: CurrentUser, page: PageNumber = 1, code: str = ""
) -> IssuePage:
    dataset = service.get_dataset(session, dataset_id, user=user)
    rows, total = records.page_issues(service.staged_records_key(dataset), page=max(1, page), code=code)
    return IssuePage(
        total=total,
        page=page,
        by_code=(dataset.report or {}).get("by_code", {}),
        issues=[IssueRead(**vars(r)) for r in rows],
    )


@router.post(
    "/{dataset_id}/import",
    response_model=DatasetVersionRead,
    status_code=201,
    summary="Import the valid records (the skipped count stays on the version)",
)
def import_valid(dataset_id: uuid.UUID, session: SessionDep, user: CurrentUser) -> DatasetVersionRead:
    dataset = service.get_dataset(session, dataset_id, user=user)
    return DatasetVersionRead.model_validate(service.import_valid(session, dataset))


@router.post(
    "/{dataset_id}/validate",
    response_model=DatasetRead,
    status_code=202,
    summary="Validate again with other options (format, columns, splits, model)",
)
def revalidate(dataset_id: uuid.UUID, body: ValidationOptions, session: SessionDep, user: CurrentUser) -> DatasetRead:
    dataset = service.get_dataset(session, dataset_id, user=user)
    service.revalidate(
        session,
        dataset,
        user=user,
        record_format=body.record_format,
        file_type=body.file_type,
        ratios=body.splits,
        seed=body.seed,
        mapping=body.column_mapping,
        model_id=body.model_id,
        text_split=body.text_split,
    )
    return to_read(session, dataset)


@router.post(
    "/{dataset_id}/upload",
    response_model=DatasetRead,
    status_code=202,
    openapi_extra=UPLOAD_BODY,
    summary="Fix and re-upload: validate a corrected file for this dataset",
)
def reupload(dataset_id: uuid.UUID, session: SessionDep, user: CurrentUser, received: ReceivedUpload) -> DatasetRead:
    dataset = service.get_dataset(session, dataset_id, user=user)
    service.replace_upload(session, dataset, user=user, stored=received.stored, filename=received.filename)
    commit_now(session)
    return to_read(session, dataset)


@router.get(
    "/{dataset_id}/versions/{version_id}/records",
    response_model=RecordPage,
    summary="Records of a version, paged and searchable",
)
def list_records(
    dataset_id: uuid.UUID,
    version_id: uuid.UUID,
    session: SessionDep,
    user: CurrentUser,
    page: PageNumber = 1,
    q: str = "",
    split: str = "",
) -> RecordPage:
    dataset = service.get_dataset(session, dataset_id, user=user)
    version = service.get_version(session, dataset, version_id)
    rows, total = records.page_records(version, page=max(1, page), query=q[:200], split=split)
    return RecordPage(
        total=total,
        page=page,
        records=[
            RecordRead(id=r.id, source_file=r.file, source_line=r.line, kind=r.kind, split=r.split, data=r.data)
            for r in rows
        ],
    )


@router.get(
    "/{dataset_id}/versions/{version_id}/download", summary="A version as JSONL", response_class=StreamingResponse
)
def download(dataset_id: uuid.UUID, version_id: uuid.UUID, session: SessionDep, user: CurrentUser) -> StreamingResponse:
    dataset = service.get_dataset(session, dataset_id, user=user)
    version = service.get_version(session, dataset, version_id)
    name = f"dataset-{dataset.id.hex[:8]}-v{version.number}.jsonl"
    return StreamingResponse(
        records.iter_jsonl(version),
        media_type="application/x-ndjson",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )
