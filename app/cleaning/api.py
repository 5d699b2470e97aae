"""JSON API for cleaning: operations, recipes, runs, decisions, overrides and commit."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, Field

from app.cleaning import service
from app.cleaning.recipe import DEFAULT_RECIPE, OP_LABELS, PARAMS, Step
from app.core.deps import SessionDep, csrf_protect
from app.core.i18n import gettext
from app.datasets import service as datasets
from app.db.models import Cleaning, DatasetVersion
from app.runs.schemas import RunRead
from app.users.deps import CurrentUser

router = APIRouter(prefix="/api/v1", tags=["cleaning"], dependencies=[Depends(csrf_protect)])

Action = Literal["keep", "drop", "original", "default"]


class OperationRead(BaseModel):
    op: str
    label: str
    parameters: dict[str, Any] = Field(description="JSON schema of the operation's parameters, with defaults.")


class OperationsRead(BaseModel):
    operations: list[OperationRead]
    default_recipe: list[Step]


class RecipeWrite(BaseModel):
    name: str = Field(min_length=1, max_length=100)
    steps: list[Step] = Field(min_length=1, max_length=30)


class RecipeRead(BaseModel):
    id: uuid.UUID
    name: str
    steps: list[Step]
    created_at: datetime


class CleaningStart(BaseModel):
    steps: list[Step] | None = Field(default=None, max_length=30, description="Steps to run (else recipe_id).")
    recipe_id: uuid.UUID | None = Field(default=None, description="A saved recipe; the default recipe if neither.")


class CleaningRead(BaseModel):
    id: uuid.UUID
    dataset_id: uuid.UUID
    version_id: uuid.UUID
    recipe_name: str
    steps: list[Step]
    run: RunRead
    summary: dict[str, Any] | None = Field(
        description="records, kept, dropped, modified, and per step its drops, changes and reasons."
    )
    overrides: dict[str, int] = Field(description="How many records the user set to keep, drop or original.")
    commit_run: RunRead | None = Field(description="The background run writing the committed version, once started.")
    committed_version_id: uuid.UUID | None
    created_at: datetime


class DecisionRead(BaseModel):
    record_id: str
    split: str
    step: int
    op: str
    action: Literal["drop", "modify"]
    reason: str
    evidence: dict[str, Any]
    override: str | None


class DecisionPage(BaseModel):
    total: int
    page: int
    items: list[DecisionRead]


class OverrideItem(BaseModel):
    record_id: str = Field(max_length=64)
    action: Action


class OverridesWrite(BaseModel):
    items: list[OverrideItem] = Field(min_length=1, max_length=10_000)


class BulkOverride(BaseModel):
    step: int | None = Field(default=None, ge=0, le=29)
    reason: str = Field(default="", max_length=40)
    action: Literal["", "drop", "modify"] = ""
    duplicate_of: str = Field(default="", max_length=64, description="One cluster: dropped as duplicates of this.")
    to: Action


class OverridesDone(BaseModel):
    changed: int


def to_read(session: SessionDep, cleaning: Cleaning) -> CleaningRead:
    version = session.get(DatasetVersion, cleaning.version_id)
    commit_run = service.commit_run(session, cleaning)
    return CleaningRead(
        id=cleaning.id,
        dataset_id=version.dataset_id if version else cleaning.version_id,
        version_id=cleaning.version_id,
        recipe_name=cleaning.recipe_name,
        steps=[Step.model_validate(s) for s in cleaning.steps],
        run=RunRead.model_validate(service.cleaning_run(session, cleaning)),
        summary=cleaning.summary,
        overrides=service.override_counts(session, cleaning),
        commit_run=RunRead.model_validate(commit_run) if commit_run else None,
        committed_version_id=cleaning.committed_version_id,
        created_at=cleaning.created_at,
    )


@router.get("/cleaning/operations", response_model=OperationsRead, summary="What a recipe can do, and the default")
def operations(user: CurrentUser) -> OperationsRead:
    return OperationsRead(
        operations=[
            OperationRead(op=op, label=gettext(OP_LABELS[op]), parameters=PARAMS[op].model_json_schema())
            for op in PARAMS
        ],
        default_recipe=[Step.model_validate(s) for s in DEFAULT_RECIPE],
    )


@router.get("/cleaning/recipes", response_model=list[RecipeRead], summary="Your saved recipes")
def recipes(session: SessionDep, user: CurrentUser) -> list[RecipeRead]:
    return [RecipeRead.model_validate(r, from_attributes=True) for r in service.list_recipes(session, user=user)]


@router.post("/cleaning/recipes", response_model=RecipeRead, status_code=201, summary="Save (or replace) a recipe")
def save_recipe(body: RecipeWrite, session: SessionDep, user: CurrentUser) -> RecipeRead:
    steps = [s.model_dump() for s in body.steps]
    recipe = service.save_recipe(session, user=user, name=body.name, steps=steps)
    return RecipeRead.model_validate(recipe, from_attributes=True)


@router.delete("/cleaning/recipes/{recipe_id}", status_code=204, summary="Delete a saved recipe")
def delete_recipe(recipe_id: uuid.UUID, session: SessionDep, user: CurrentUser) -> None:
    service.delete_recipe(session, service.get_recipe(session, recipe_id, user=user))


@router.post(
    "/datasets/{dataset_id}/versions/{version_id}/cleanings",
    response_model=CleaningRead,
    status_code=202,
    summary="Clean a version with a recipe (a background run)",
)
def start(
    dataset_id: uuid.UUID, version_id: uuid.UUID, body: CleaningStart, session: SessionDep, user: CurrentUser
) -> CleaningRead:
    datasets.get_version(session, datasets.get_dataset(session, dataset_id, user=user), version_id)
    steps = [s.model_dump() for s in body.steps] if body.steps is not None else None
    cleaning = service.start_cleaning(session, user=user, version_id=version_id, steps=steps, recipe_id=body.recipe_id)
    return to_read(session, cleaning)


@router.get("/cleanings", response_model=list[CleaningRead], summary="Your cleaning runs, newest first")
def list_cleanings(session: SessionDep, user: CurrentUser) -> list[CleaningRead]:
    return [to_read(session, c) for c in service.list_cleanings(session, user=user)]


@router.get("/cleanings/{cleaning_id}", response_model=CleaningRead, summary="A cleaning run and its counts")
def get_cleaning(cleaning_id: uuid.UUID, session: SessionDep, user: CurrentUser) -> CleaningRead:
    return to_read(session, service.get_cleaning(session, cleaning_id, user=user))


@router.get("/cleanings/{cleaning_id}/decisions", response_model=DecisionPage, summary="Its decisions, filtered")
def decisions(
    cleaning_id: uuid.UUID,
    session: SessionDep,
    user: CurrentUser,
    step: int | None = Query(default=None, ge=0, le=29),
    reason: str = Query(default="", max_length=40),
    action: Literal["", "drop", "modify"] = "",
    duplicate_of: str = Query(default="", max_length=64, description="One cluster: dropped as duplicates of this."),
    page: int = Query(default=1, ge=1, le=1_000_000),
) -> DecisionPage:
    cleaning = service.get_cleaning(session, cleaning_id, user=user)
    rows, total = service.page_decisions(
        session, cleaning, step=step, reason=reason, action=action, duplicate_of=duplicate_of, page=page
    )
    return DecisionPage(
        total=total, page=page, items=[DecisionRead.model_validate(r, from_attributes=True) for r in rows]
    )


@router.put("/cleanings/{cleaning_id}/overrides", response_model=OverridesDone, summary="Override decisions")
def put_overrides(
    cleaning_id: uuid.UUID, body: OverridesWrite, session: SessionDep, user: CurrentUser
) -> OverridesDone:
    cleaning = service.get_cleaning(session, cleaning_id, user=user)
    items: list[tuple[str, str]] = [(i.record_id, i.action) for i in body.items]
    return OverridesDone(changed=service.set_overrides(session, cleaning, user=user, items=items))


@router.post(
    "/cleanings/{cleaning_id}/overrides/bulk", response_model=OverridesDone, summary="One verdict for a whole filter"
)
def bulk_override(cleaning_id: uuid.UUID, body: BulkOverride, session: SessionDep, user: CurrentUser) -> OverridesDone:
    cleaning = service.get_cleaning(session, cleaning_id, user=user)
    changed = service.override_filter(
        session,
        cleaning,
        user=user,
        step=body.step,
        reason=body.reason,
        action=body.action,
        duplicate_of=body.duplicate_of,
        to=body.to,
    )
    return OverridesDone(changed=changed)


@router.post(
    "/cleanings/{cleaning_id}/commit",
    response_model=CleaningRead,
    status_code=202,
    summary="Commit the cleaned records as a new immutable version (a background run)",
    description="Poll the cleaning: `commit_run` shows the progress, and `committed_version_id` names the new "
    "version once it is written. The overrides cannot change while the commit runs.",
)
def commit(cleaning_id: uuid.UUID, session: SessionDep, user: CurrentUser) -> CleaningRead:
    cleaning = service.get_cleaning(session, cleaning_id, user=user)
    service.start_commit(session, cleaning, user=user)
    return to_read(session, cleaning)
