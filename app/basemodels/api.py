"""JSON API for base models."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Depends
from sqlalchemy.orm import Session

from app.basemodels import service
from app.basemodels.schemas import BaseModelRead, HubModelCreate, LocalModelCreate
from app.core.deps import SessionDep, csrf_protect
from app.db.models import BaseModelRecord
from app.runs.schemas import RunRead
from app.users.deps import CurrentUser

router = APIRouter(prefix="/api/v1/models", tags=["models"], dependencies=[Depends(csrf_protect)])


def to_read(session: Session, model: BaseModelRecord) -> BaseModelRead:
    run = service.import_run(session, model)
    data = {c.key: getattr(model, c.key) for c in BaseModelRecord.__table__.columns}
    data["shared"] = model.owner_id is None
    data["import_run"] = RunRead.model_validate(run) if run else None
    return BaseModelRead.model_validate(data)


@router.get("", response_model=list[BaseModelRead], summary="Base models you can use")
def list_models(session: SessionDep, user: CurrentUser) -> list[BaseModelRead]:
    return [to_read(session, m) for m in service.list_models(session, user=user)]


@router.get("/{model_id}", response_model=BaseModelRead, summary="One base model")
def get_model(model_id: uuid.UUID, session: SessionDep, user: CurrentUser) -> BaseModelRead:
    return to_read(session, service.get_model(session, model_id, user=user))


@router.post(
    "/local",
    response_model=BaseModelRead,
    status_code=202,
    summary="Register a Hugging Face directory on the server (administrators)",
)
def register_local(body: LocalModelCreate, session: SessionDep, user: CurrentUser) -> BaseModelRead:
    return to_read(session, service.register_local(session, user=user, name=body.name, path=body.path))


@router.post("/hub", response_model=BaseModelRead, status_code=202, summary="Import a hub repository")
def register_hub(body: HubModelCreate, session: SessionDep, user: CurrentUser) -> BaseModelRead:
    model = service.register_hub(session, user=user, repo_id=body.repo_id, revision=body.revision, name=body.name)
    return to_read(session, model)


@router.post("/{model_id}/retry", response_model=BaseModelRead, status_code=202, summary="Retry a failed import")
def retry(model_id: uuid.UUID, session: SessionDep, user: CurrentUser) -> BaseModelRead:
    model = service.get_model(session, model_id, user=user)
    return to_read(session, service.retry_import(session, model, user=user))
