"""JSON API for playground feedback: thumbs and side-by-side picks, and the preference dataset made of them."""

from __future__ import annotations

import uuid
from typing import Literal

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field

from app.core.deps import SessionDep, csrf_protect
from app.playground import service
from app.users.deps import CurrentUser

router = APIRouter(prefix="/api/v1/feedback", tags=["playground"], dependencies=[Depends(csrf_protect)])


class Message(BaseModel):
    role: Literal["system", "user", "assistant"]
    content: str = Field(max_length=100_000)


class FeedbackCreate(BaseModel):
    prompt: list[Message] = Field(min_length=1, max_length=200, description="The conversation that was answered.")
    choice: Literal["up", "down", "a", "b"] = Field(
        description="up/down: a thumb on answer_a; a/b: the better of two answers side by side."
    )
    model_a: str = Field(max_length=200, description="base-<id> or job-<id>")
    answer_a: str = Field(max_length=100_000)
    model_b: str | None = Field(default=None, max_length=200, description="Side by side only.")
    answer_b: str | None = Field(default=None, max_length=100_000)
    cut_a: bool = Field(default=False, description="answer_a was cut off at max tokens (it cannot be chosen).")
    cut_b: bool = Field(default=False, description="answer_b was cut off at max tokens (it cannot be chosen).")


class FeedbackSaved(BaseModel):
    id: uuid.UUID
    counts: dict[str, int] = Field(description="Feedback not yet used in a preference dataset, by choice.")


class PreferencesCreate(BaseModel):
    name: str = Field(default="", max_length=200)


class PreferencesMade(BaseModel):
    dataset_id: uuid.UUID = Field(description="The new preference dataset (validated in the background).")


@router.post("", response_model=FeedbackSaved, status_code=201, summary="Record a thumb or a side-by-side pick")
def save(body: FeedbackCreate, session: SessionDep, user: CurrentUser) -> FeedbackSaved:
    saved = service.save_feedback(session, body.model_dump(mode="json"), user=user)
    return FeedbackSaved(id=saved.id, counts=service.feedback_counts(session, user=user))


@router.get("", response_model=dict[str, int], summary="Feedback not yet used, by choice")
def counts(session: SessionDep, user: CurrentUser) -> dict[str, int]:
    return service.feedback_counts(session, user=user)


@router.post(
    "/preferences",
    response_model=PreferencesMade,
    status_code=201,
    summary="Turn the unused picks into a preference (DPO) dataset",
)
def make_preferences(body: PreferencesCreate, session: SessionDep, user: CurrentUser) -> PreferencesMade:
    dataset = service.make_preference_dataset(session, user=user, name=body.name)
    return PreferencesMade(dataset_id=dataset.id)
