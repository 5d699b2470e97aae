from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from app.core.validation import MAX_SEED
from app.db.models import DatasetStatus
from app.runs.schemas import RunRead


class DatasetVersionRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    number: int
    record_count: int
    skipped_count: int = Field(description="Lines of the upload left out because they were invalid.")
    split_counts: dict[str, int]
    kind_counts: dict[str, int]
    stats: dict[str, Any]
    source: str
    parent_version_id: uuid.UUID | None
    upload_id: uuid.UUID | None
    options: dict[str, Any]
    created_at: datetime


class DatasetRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    name: str
    status: DatasetStatus
    filename: str
    split_files: dict[str, str] = Field(default={}, description="Separate files of the validation/test splits.")
    file_type: str | None
    record_format: str | None
    format_override: str | None
    column_mapping: dict[str, str] | None
    text_split: str | None = Field(
        default=None, description="Plain text: lines, paragraphs or document as you chose it; null: detected."
    )
    model_id: uuid.UUID | None
    split_ratios: dict[str, float]
    split_seed: int
    report: dict[str, Any] | None
    error_message: str | None
    created_at: datetime
    validation_run: RunRead | None = None
    versions: list[DatasetVersionRead] = []


class ValidationOptions(BaseModel):
    record_format: str | None = Field(default=None, description="Override the detected record format.")
    file_type: str | None = Field(default=None, description="Override the file type: jsonl, json, csv, parquet, text.")
    splits: dict[str, Annotated[float, Field(ge=0, le=100)]] | None = Field(
        default=None, description="Ratios for train, validation and test."
    )
    seed: int | None = Field(default=None, ge=0, le=MAX_SEED, description="Seed of the split assignment.")
    column_mapping: dict[str, str] | None = Field(
        default=None, description='CSV/Parquet: record field → column name, e.g. {"prompt": "question"}.'
    )
    model_id: uuid.UUID | None = Field(default=None, description="Base model whose tokenizer and context apply.")
    text_split: Literal["lines", "paragraphs", "document"] | None = Field(
        default=None,
        description="Plain text: one record per line, per paragraph (split at blank lines), or a long document "
        "in chunks; empty: detected from the file.",
    )


class RecordRead(BaseModel):
    id: str
    source_file: str = Field(default="", description="Empty for the main file, else the split file's split.")
    source_line: int
    kind: str
    split: str
    data: dict[str, Any]


class RecordPage(BaseModel):
    total: int
    page: int
    records: list[RecordRead]


class IssueRead(BaseModel):
    source: str = Field(default="", description="Empty for the main file, else the split file's split.")
    line: int
    code: str
    message: str
    excerpt: str


class IssuePage(BaseModel):
    total: int
    page: int
    by_code: dict[str, int]
    issues: list[IssueRead]
