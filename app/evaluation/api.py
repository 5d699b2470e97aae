"""JSON API for evaluations."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Depends, Response
from pydantic import BaseModel, Field
from sqlalchemy.orm import Session

from app.core.deps import SessionDep, csrf_protect
from app.core.errors import InvalidInput, NotFound
from app.core.i18n import _
from app.db.models import Evaluation, Judge, Judgement, Run
from app.evaluation import judges, service
from app.jobs import service as jobs
from app.runs.schemas import RunRead
from app.users.deps import CurrentUser

router = APIRouter(prefix="/api/v1", tags=["evaluations"], dependencies=[Depends(csrf_protect)])


class EvaluationCreate(service.EvaluationOptions):
    """Options left out take the server's evaluation settings (REFINERY_EVAL_SAMPLE_SIZE, _MAX_NEW_TOKENS,
    _LOSS_RECORDS, _PROBE_SIZE), as the evaluation after training does."""

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
    version_id = body.dataset_version_id or job.dataset_version_id
    if version_id is None:
        raise InvalidInput(
            _("An uploaded adapter has no training data: name the dataset version to evaluate it on."),
            field="dataset_version_id",
        )
    _dataset, version = jobs.owned_version(session, version_id, user=user)
    options = service.configured(body.model_dump(exclude={"dataset_version_id"}, exclude_unset=True))
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


class JudgeRead(BaseModel):
    id: uuid.UUID
    name: str
    kind: str = Field(description="endpoint (any OpenAI-compatible server) or local (an imported base model).")
    url: str | None
    model: str
    base_model_id: uuid.UUID | None
    timeout_s: int
    has_key: bool = Field(description="Whether an API key is stored (the key itself is never shown).")

    @classmethod
    def of(cls, judge: Judge) -> JudgeRead:
        return cls(
            id=judge.id,
            name=judge.name,
            kind=judge.kind,
            url=judge.url,
            model=judge.model,
            base_model_id=judge.base_model_id,
            timeout_s=judge.timeout_s,
            has_key=bool(judge.api_key),
        )


class JudgementCreate(BaseModel):
    judge_id: uuid.UUID


class JudgementRead(BaseModel):
    id: uuid.UUID
    judge_name: str
    created_at: datetime
    run: RunRead
    summary: dict[str, Any] | None = Field(description="Pairwise outcomes, failures by kind, rubric means.")
    agreement: dict[str, Any] = Field(description="How often the judge agrees with your labels.")


class LabelWrite(BaseModel):
    choice: str = Field(pattern="^(base|tuned|tie|clear)$", description="The better answer, a tie, or clear.")


def judgement_read(session: Session, judgement: Judgement, labels: dict[str, str]) -> JudgementRead:
    run = session.get(Run, judgement.run_id) if judgement.run_id else None
    assert run is not None
    return JudgementRead(
        id=judgement.id,
        judge_name=judgement.judge_name,
        created_at=judgement.created_at,
        run=RunRead.model_validate(run),
        summary=judgement.summary,
        agreement=judges.agreement(judges.verdicts(judgement), labels),
    )


@router.get("/judges", response_model=list[JudgeRead], summary="The judges an administrator set up")
def list_judges(session: SessionDep, user: CurrentUser) -> list[JudgeRead]:
    return [JudgeRead.of(j) for j in judges.list_judges(session)]


@router.post("/judges", response_model=JudgeRead, status_code=201, summary="Set up a judge (administrators)")
def create_judge(body: judges.JudgeCreate, session: SessionDep, user: CurrentUser) -> JudgeRead:
    return JudgeRead.of(judges.create_judge(session, user=user, body=body))


@router.delete("/judges/{judge_id}", status_code=204, summary="Remove a judge (administrators)")
def delete_judge(judge_id: uuid.UUID, session: SessionDep, user: CurrentUser) -> Response:
    judges.delete_judge(session, user=user, judge_id=judge_id)
    return Response(status_code=204)


@router.post(
    "/evaluations/{evaluation_id}/judgements",
    response_model=JudgementRead,
    status_code=201,
    summary="Have a judge grade an evaluation's answers",
)
def create_judgement(
    evaluation_id: uuid.UUID, body: JudgementCreate, session: SessionDep, user: CurrentUser
) -> JudgementRead:
    evaluation = service.get_evaluation(session, evaluation_id, user=user)
    judge = judges.get_judge(session, body.judge_id)
    judgement = judges.start_judgement(session, user=user, evaluation=evaluation, judge=judge)
    return judgement_read(session, judgement, judges.labels_for(session, evaluation))


@router.get(
    "/evaluations/{evaluation_id}/judgements", response_model=list[JudgementRead], summary="An evaluation's judgements"
)
def list_judgements(evaluation_id: uuid.UUID, session: SessionDep, user: CurrentUser) -> list[JudgementRead]:
    evaluation = service.get_evaluation(session, evaluation_id, user=user)
    labels = judges.labels_for(session, evaluation)
    return [judgement_read(session, j, labels) for j in judges.judgements_for(session, evaluation)]


@router.get("/evaluations/{evaluation_id}/judgements/{judgement_id}/verdicts", summary="A judge's verdicts per sample")
def judgement_verdicts(
    evaluation_id: uuid.UUID, judgement_id: uuid.UUID, session: SessionDep, user: CurrentUser
) -> list[dict[str, Any]]:
    evaluation = service.get_evaluation(session, evaluation_id, user=user)
    for judgement in judges.judgements_for(session, evaluation):
        if judgement.id == judgement_id:
            return list(judges.verdicts(judgement).values())
    raise NotFound(_("No such judgement."))


@router.get("/evaluations/{evaluation_id}/labels", summary="Your labels on this evaluation's samples")
def list_labels(evaluation_id: uuid.UUID, session: SessionDep, user: CurrentUser) -> dict[str, str]:
    return judges.labels_for(session, service.get_evaluation(session, evaluation_id, user=user))


@router.put("/evaluations/{evaluation_id}/labels/{sample_id}", summary="Label which answer of a sample is better")
def put_label(
    evaluation_id: uuid.UUID, sample_id: str, body: LabelWrite, session: SessionDep, user: CurrentUser
) -> dict[str, str]:
    evaluation = service.get_evaluation(session, evaluation_id, user=user)
    judges.set_label(session, user=user, evaluation=evaluation, sample_id=sample_id, choice=body.choice)
    return judges.labels_for(session, evaluation)
