"""JSON API for saved graders: what the Evaluations page's graders card does (/api/v1/graders). Running one on
a sample is OpenAI's /v1/fine_tuning/alpha/graders/run."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Depends, Response
from pydantic import BaseModel, ConfigDict, Field

from app.core.deps import SessionDep, csrf_protect
from app.db.models import SavedGrader
from app.graders import library
from app.users.deps import CurrentUser

router = APIRouter(prefix="/api/v1/graders", tags=["graders"], dependencies=[Depends(csrf_protect)])


class GraderCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=100, description="Shown with its scores; replaces the spec's name.")
    spec: dict[str, Any] = Field(description="A grader object as OpenAI writes it (string_check, python, multi …).")


class GraderRead(BaseModel):
    id: uuid.UUID
    name: str
    spec: dict[str, Any]
    created_at: datetime


def to_read(row: SavedGrader) -> GraderRead:
    return GraderRead(id=row.id, name=row.name, spec=row.spec, created_at=row.created_at)


@router.post("", response_model=GraderRead, status_code=201, summary="Save a grader under a name")
def create(body: GraderCreate, session: SessionDep, user: CurrentUser) -> GraderRead:
    return to_read(library.create_grader(session, user=user, name=body.name, spec=body.spec))


@router.get("", response_model=list[GraderRead], summary="Your saved graders")
def list_all(session: SessionDep, user: CurrentUser) -> list[GraderRead]:
    return [to_read(row) for row in library.list_graders(session, user=user)]


@router.get("/{grader_id}", response_model=GraderRead, summary="One saved grader")
def get(grader_id: uuid.UUID, session: SessionDep, user: CurrentUser) -> GraderRead:
    return to_read(library.get_grader(session, grader_id, user=user))


@router.delete("/{grader_id}", status_code=204, summary="Delete a saved grader (evaluations keep their copy)")
def delete(grader_id: uuid.UUID, session: SessionDep, user: CurrentUser) -> Response:
    library.delete_grader(session, library.get_grader(session, grader_id, user=user))
    return Response(status_code=204)
