"""Deployment pages: the list with a form to create one, and one deployment with Promote, its gate's progress,
its history and Roll back."""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import RedirectResponse, Response

from app.core.deps import SessionDep, csrf_protect
from app.core.errors import InvalidInput
from app.core.forms import FormDep
from app.core.i18n import _
from app.core.templating import render, render_live
from app.datasets import service as datasets
from app.db.models import Deployment, User
from app.deployments import service
from app.openai_api.models import catalogue
from app.users.deps import PageUser

router = APIRouter(dependencies=[Depends(csrf_protect)], include_in_schema=False)


def _models(session: SessionDep, user: User) -> list[Any]:
    """What a deployment may serve (base models and adapters, not another deployment's name), read once."""
    return [e for e in catalogue(session, user) if e.listed and not e.deployment]


@router.get("/deployments")
def index(request: Request, session: SessionDep, user: PageUser) -> Response:
    versions = [
        (dataset, version)
        for dataset in datasets.list_datasets(session, user=user)
        for version in datasets.versions(session, dataset)
    ]
    models = _models(session, user)
    names = {e.target: e.label for e in models}
    context = {
        "deployments": [(d, names.get(d.target, d.target)) for d in service.list_for(session, user=user)],
        "models": models,
        "versions": versions,
        "metrics": service.METRICS,
        "example_name": "support-bot",
    }
    return render(request, "deployments/index.html", context)


@router.post("/deployments")
def create(request: Request, session: SessionDep, user: PageUser, form: FormDep) -> Response:
    try:
        version_id = uuid.UUID(str(form.get("dataset_version_id", "")))
        margin = float(str(form.get("margin") or 0))
        sample_size = int(str(form.get("sample_size") or 20))
    except ValueError as exc:
        raise InvalidInput(
            _("Choose the gate's dataset version, and give the margin and sample size as numbers.")
        ) from exc
    if not 0 <= margin <= 1 or not 1 <= sample_size <= 2000:
        raise InvalidInput(_("The margin is from 0 to 1 and the sample size from 1 to 2000."), field="margin")
    metric = str(form.get("metric", "rouge_l"))
    gate = {"dataset_version_id": version_id, "metric": metric, "margin": margin, "sample_size": sample_size}
    deployment = service.create(
        session, user=user, name=str(form.get("name", "")), model=str(form.get("model", "")), gate=gate
    )
    return RedirectResponse(f"/deployments/{deployment.id}", status_code=303)


def _context(session: SessionDep, user: User, deployment: Deployment) -> dict[str, Any]:
    models = _models(session, user)
    names = {e.target: e.label for e in models}
    promotions = service.promotions(session, deployment)
    history = service.history(session, deployment)
    earlier = []
    for event in history:
        for target in (event.target, event.previous):
            if target and target != deployment.target and target not in earlier:
                earlier.append(target)
    return {
        "deployment": deployment,
        "label": names.get(deployment.target, deployment.target),
        "history": [(e, names.get(e.target, e.target)) for e in history],
        "promotions": promotions,
        "running": [p for p in promotions if p.status == "running"],
        "candidates": [e for e in models if e.target.startswith("job-") and e.target != deployment.target],
        "earlier": [(t, names.get(t, t)) for t in earlier],
        "is_admin": user.role.value == "admin",
    }


@router.get("/deployments/{deployment_id}")
def detail(request: Request, session: SessionDep, user: PageUser, deployment_id: uuid.UUID) -> Response:
    deployment = service.get(session, deployment_id, user=user)
    return render(request, "deployments/detail.html", _context(session, user, deployment))


@router.get("/deployments/{deployment_id}/_gate")
def gate_live(request: Request, session: SessionDep, user: PageUser, deployment_id: uuid.UUID) -> Response:
    context = _context(session, user, service.get(session, deployment_id, user=user))
    return render_live(request, "deployments/_gate.html", context, live=bool(context["running"]))


@router.post("/deployments/{deployment_id}/promote")
def promote(request: Request, session: SessionDep, user: PageUser, form: FormDep, deployment_id: uuid.UUID) -> Response:
    deployment = service.get(session, deployment_id, user=user)
    service.promote(
        session,
        user=user,
        deployment=deployment,
        model=str(form.get("model", "")),
        override_reason=str(form.get("override_reason", "")),
    )
    return RedirectResponse(f"/deployments/{deployment_id}#gate", status_code=303)


@router.post("/deployments/{deployment_id}/rollback")
def rollback(
    request: Request, session: SessionDep, user: PageUser, form: FormDep, deployment_id: uuid.UUID
) -> Response:
    deployment = service.get(session, deployment_id, user=user)
    service.rollback(session, user=user, deployment=deployment, model=str(form.get("model", "")))
    return RedirectResponse(f"/deployments/{deployment_id}", status_code=303)


@router.post("/deployments/{deployment_id}/delete")
def delete(request: Request, session: SessionDep, user: PageUser, deployment_id: uuid.UUID) -> Response:
    service.delete(session, service.get(session, deployment_id, user=user))
    return RedirectResponse("/deployments", status_code=303)
