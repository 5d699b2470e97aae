"""JSON API for deployments: create, list, promote through the gate, roll back, history."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field

from app.core.deps import SessionDep, csrf_protect
from app.db.models import Deployment
from app.deployments import service
from app.users.deps import CurrentUser

router = APIRouter(prefix="/api/v1/deployments", tags=["deployments"], dependencies=[Depends(csrf_protect)])


class Gate(BaseModel):
    dataset_version_id: uuid.UUID = Field(description="The dataset version the gate evaluates on (its test split).")
    metric: str = Field("rouge_l", description="rouge_l, f1, bleu, exact_match, or graders (their pass rate).")
    margin: float = Field(0.0, ge=0, le=1, description="How far below the served model's score still passes.")
    probe_margin: float = Field(0.05, ge=0, le=10, description="How much more forgetting (probe loss) passes.")
    sample_size: int = Field(20, ge=1, le=2000, description="Test prompts answered by each model.")
    grader_ids: list[uuid.UUID] = Field(default_factory=list, max_length=8)


class DeploymentCreate(BaseModel):
    name: str = Field(max_length=60, description="The model name clients send, e.g. support-bot.")
    model: str = Field(max_length=300, description="What it serves first: an adapter or a base model, any /v1 id.")
    gate: Gate


class Promote(BaseModel):
    model: str = Field(max_length=300, description="The candidate adapter (any /v1 id).")
    override_reason: str = Field("", max_length=2000, description="Administrators: switch without the gate, why.")


class Rollback(BaseModel):
    model: str = Field(max_length=300, description="A model this deployment served before.")


def read(session: Any, user: Any, deployment: Deployment) -> dict[str, Any]:

    def when(moment: datetime | None) -> str | None:
        return moment.isoformat() if moment else None

    return {
        "id": str(deployment.id),
        "name": deployment.name,
        "model": deployment.target,
        "model_label": service.labels(session, user).get(deployment.target, deployment.target),
        "gate": deployment.gate,
        "created_at": when(deployment.created_at),
        "history": [
            {
                "action": e.action,
                "model": e.target,
                "previous": e.previous,
                "numbers": e.numbers,
                "reason": e.reason,
                "at": when(e.created_at),
            }
            for e in service.history(session, deployment)
        ],
        "promotions": [
            {
                "id": str(p.id),
                "candidate": p.candidate,
                "baseline": p.baseline,
                "status": p.status,
                "numbers": p.numbers,
                "reason": p.reason,
                "evaluations": [str(e) for e in (p.candidate_evaluation_id, p.baseline_evaluation_id) if e],
            }
            for p in service.promotions(session, deployment)
        ],
    }


@router.get("", summary="Your deployments")
def list_deployments(session: SessionDep, user: CurrentUser) -> list[dict[str, Any]]:
    return [read(session, user, d) for d in service.list_for(session, user=user)]


@router.post("", status_code=201, summary="Create a deployment: a stable model name with an evaluation gate")
def create(body: DeploymentCreate, session: SessionDep, user: CurrentUser) -> dict[str, Any]:
    gate = body.gate.model_dump(mode="json")
    return read(session, user, service.create(session, user=user, name=body.name, model=body.model, gate=gate))


@router.get("/{deployment_id}", summary="One deployment with its history and promotions")
def get(deployment_id: uuid.UUID, session: SessionDep, user: CurrentUser) -> dict[str, Any]:
    return read(session, user, service.get(session, deployment_id, user=user))


@router.post("/{deployment_id}/promote", summary="Promote a candidate through the gate (or override it)")
def promote(deployment_id: uuid.UUID, body: Promote, session: SessionDep, user: CurrentUser) -> Response:
    deployment = service.get(session, deployment_id, user=user)
    promotion = service.promote(
        session, user=user, deployment=deployment, model=body.model, override_reason=body.override_reason
    )
    return JSONResponse(read(session, user, deployment), status_code=200 if promotion is None else 202)


@router.post("/{deployment_id}/rollback", summary="Serve a model this deployment served before, at once")
def rollback(deployment_id: uuid.UUID, body: Rollback, session: SessionDep, user: CurrentUser) -> dict[str, Any]:
    deployment = service.get(session, deployment_id, user=user)
    service.rollback(session, user=user, deployment=deployment, model=body.model)
    return read(session, user, deployment)


@router.delete("/{deployment_id}", status_code=204, summary="Delete a deployment (its name stops answering)")
def delete(deployment_id: uuid.UUID, session: SessionDep, user: CurrentUser) -> Response:
    service.delete(session, service.get(session, deployment_id, user=user))
    return Response(status_code=204)
