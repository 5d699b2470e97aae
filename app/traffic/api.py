"""JSON API for the Traffic page: stored completions with their review, reviewing one, and Make dataset."""

from __future__ import annotations

import uuid
from typing import Literal

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, Field

from app.core.deps import SessionDep, csrf_protect
from app.db.models import StoredCompletion
from app.openai_api.stored import to_object
from app.runs.schemas import RunRead
from app.traffic import distill, service
from app.users.deps import CurrentUser

router = APIRouter(prefix="/api/v1/traffic", tags=["traffic"], dependencies=[Depends(csrf_protect)])


class TrafficRead(BaseModel):
    completion: dict[str, object] = Field(description="The stored chat completion, as GET /v1/chat/completions/{id}.")
    messages: list[dict[str, object]] = Field(description="The request's messages.")
    rating: str | None = Field(description="good, bad, or None.")
    correction: str | None = Field(description="The answer as it should have been, if given.")
    dataset_id: uuid.UUID | None = Field(description="The dataset Make dataset put it into.")


def _read(row: StoredCompletion) -> TrafficRead:
    return TrafficRead(
        completion=to_object(row),
        messages=row.messages,
        rating=row.rating,
        correction=row.correction,
        dataset_id=row.dataset_id,
    )


class FilterParams(BaseModel):
    model: str = Field("", max_length=300)
    q: str = Field("", max_length=200, description="Words in the messages or the answer, any case.")
    metadata: str = Field("", max_length=600, description="key=value")
    review: Literal["any", "good", "bad", "unrated", "corrected"] = "any"
    unused: bool = Field(False, description="Only answers not in a dataset yet.")
    dataset: str = Field("", max_length=40, description="Only the answers a dataset (its id) was made from.")

    def to_filter(self) -> service.Filter:
        return service.Filter(self.model, self.q, self.metadata, self.review, self.unused, self.dataset).check()


@router.get("", response_model=list[TrafficRead], summary="Your stored completions with their review, newest first")
def list_traffic(
    session: SessionDep,
    user: CurrentUser,
    filters: FilterParams = Depends(),
    limit: int = Query(100, ge=1, le=1000),
) -> list[TrafficRead]:
    return [_read(r) for r in service.select_rows(session, user, filters.to_filter(), limit=limit)]


class ReviewWrite(BaseModel):
    rating: Literal["good", "bad", ""] | None = Field(None, description="good or bad; '' clears the mark.")
    correction: str | None = Field(None, max_length=100_000, description="The right answer; '' clears it.")


@router.put("/{completion_id}", response_model=TrafficRead, summary="Mark an answer good or bad, or correct it")
def put_review(completion_id: str, body: ReviewWrite, session: SessionDep, user: CurrentUser) -> TrafficRead:
    return _read(service.review(session, user, completion_id, rating=body.rating, correction=body.correction))


class DatasetWrite(FilterParams):
    kind: Literal["sft", "preference"] = Field("sft", description="Conversations, or preference pairs.")
    name: str = Field("", max_length=200)


class DatasetMade(BaseModel):
    dataset_id: uuid.UUID
    records: int


@router.post("/datasets", response_model=DatasetMade, status_code=201, summary="Make a dataset from the answers")
def make_dataset(body: DatasetWrite, session: SessionDep, user: CurrentUser) -> DatasetMade:
    dataset, count = service.make_dataset(session, user, body.to_filter(), kind=body.kind, name=body.name)
    return DatasetMade(dataset_id=dataset.id, records=count)


class DistillationWrite(BaseModel):
    judge_id: uuid.UUID = Field(description="The teacher: any model set up under Judges (GET /api/v1/judges).")
    dataset_version_id: uuid.UUID = Field(description="Whose train split's prompts the teacher answers.")
    limit: int = Field(200, ge=1, le=100_000, description="At most this many prompts.")
    max_tokens: int = Field(512, ge=1, le=8192)
    temperature: float = Field(0.0, ge=0, le=2)


@router.post(
    "/distillations",
    response_model=RunRead,
    status_code=202,
    summary="A teacher answers a dataset's prompts; the answers arrive here as stored completions to review",
)
def distill_dataset(body: DistillationWrite, session: SessionDep, user: CurrentUser) -> RunRead:
    run = distill.start(
        session,
        user=user,
        judge_id=body.judge_id,
        version_id=body.dataset_version_id,
        limit=body.limit,
        max_tokens=body.max_tokens,
        temperature=body.temperature,
    )
    return RunRead.model_validate(run)
