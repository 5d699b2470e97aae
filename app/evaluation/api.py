"""JSON API for evaluations."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field
from sqlalchemy.orm import Session

from app.core.deps import CurrentUser, SessionDep, csrf_protect
from app.db.models import Evaluation
from app.evaluation import service
from app.jobs import service as jobs
from app.runs.schemas import RunRead

router = APIRouter(prefix="/api/v1", tags=["evaluations"], dependencies=[Depends(csrf_protect)])


class EvaluationCreate(service.EvaluationOptions):
    dataset_version_id: uuid.UUID | None = Field(
        default=None, description="The dataset version to evaluate on; defaults to the one the job trained on."
    )


class EvaluationRead(BaseModel):
    id: uuid.UUID
    job_id: uuid.UUID
    dataset_version_id: uuid.UUID
    options: dict[str, Any]
    created_at: datetime
    run: RunRead
    summary: dict[str, Any] | None = Field(description="Loss, perplexity, scores per model, probe, contamination.")
    verdict: str


def to_read(session: Session, evaluation: Evaluation) -> EvaluationRead:
    return EvaluationRead(
        id=evaluation.id,
        job_id=evaluation.job_id,
        dataset_version_id=evaluation.dataset_version_id,
        options=evaluation.options,
        created_at=evaluation.created_at,
        run=RunRead.model_validate(service.evaluation_run(session, evaluation)),
        summary=evaluation.summary,
        verdict=service.verdict(evaluation.summary) if evaluation.summary else "",
    )


@router.post(
    "/jobs/{job_id}/evaluations", response_model=EvaluationRead, status_code=201, summary="Evaluate a job again"
)
def create(job_id: uuid.UUID, body: EvaluationCreate, session: SessionDep, user: CurrentUser) -> EvaluationRead:
    job = jobs.get_job(session, job_id, user=user)
    _dataset, version = jobs.owned_version(session, body.dataset_version_id or job.dataset_version_id, user=user)
    options = service.EvaluationOptions.model_validate(body.model_dump(exclude={"dataset_version_id"}))
    return to_read(session, service.create_evaluation(session, user=user, job=job, version=version, options=options))


@router.get("/evaluations", response_model=list[EvaluationRead], summary="Your evaluations")
def list_all(session: SessionDep, user: CurrentUser) -> list[EvaluationRead]:
    return [to_read(session, e) for e in service.list_evaluations(session, user=user)]


@router.get("/evaluations/{evaluation_id}", response_model=EvaluationRead, summary="An evaluation and its report")
def get(evaluation_id: uuid.UUID, session: SessionDep, user: CurrentUser) -> EvaluationRead:
    return to_read(session, service.get_evaluation(session, evaluation_id, user=user))


@router.get("/evaluations/{evaluation_id}/samples", summary="Per-sample outputs and scores")
def samples(
    evaluation_id: uuid.UUID, session: SessionDep, user: CurrentUser, sort: str = "diff"
) -> list[dict[str, Any]]:
    return service.samples(service.get_evaluation(session, evaluation_id, user=user), sort=sort)
