from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from app.db.models import ModelStatus
from app.runs.schemas import RunRead


class BaseModelRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    name: str
    source: str
    source_ref: str
    revision: str | None
    status: ModelStatus
    shared: bool = Field(description="True for models every user can see (the bundled one).")
    architecture: str | None
    num_parameters: int | None
    context_length: int | None
    license: str | None
    chat_template: str | None
    size_bytes: int | None
    error_message: str | None
    created_at: datetime
    import_run: RunRead | None = None


class LocalModelCreate(BaseModel):
    name: str = Field(min_length=1, max_length=200, description="Display name.")
    path: str = Field(
        min_length=1,
        max_length=1000,
        description="Absolute path of a Hugging Face model directory on the server.",
    )


class HubModelCreate(BaseModel):
    repo_id: str = Field(min_length=3, max_length=200, description="Hub repository id, e.g. org/name.")
    revision: str = Field(default="main", min_length=1, max_length=100, description="Branch, tag or commit to import.")
    name: str | None = Field(default=None, max_length=200, description="Display name (defaults to the repo id).")
