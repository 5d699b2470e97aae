from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict

from app.db.models import RunStatus


class RunRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    kind: str
    status: RunStatus
    progress: float
    progress_message: str | None
    progress_code: str | None = None
    progress_params: dict[str, Any] | None = None
    eta_seconds: float | None
    attempt: int
    max_attempts: int
    error_kind: str | None
    error_message: str | None
    error_code: str | None = None
    error_params: dict[str, Any] | None = None
    result: dict[str, Any] | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


class RunEventRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    seq: int
    created_at: datetime
    level: str
    message: str
    code: str | None = None
    params: dict[str, Any] | None = None
    attempt: int


class ActiveRunRead(RunRead):
    owner: str | None = None  # the owner's e-mail (None: the system's own, such as the bundled model's import)
