"""Models pages: the list (with live import progress), registration, details."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import RedirectResponse, Response

from app.basemodels import service
from app.basemodels.bundled import BUNDLED_HUB_ID
from app.core.deps import SessionDep, csrf_protect
from app.core.errors import RefineryError
from app.core.templating import render
from app.db.models import ModelStatus
from app.users.deps import PageUser

router = APIRouter(dependencies=[Depends(csrf_protect)], include_in_schema=False)


def _rows(session: SessionDep, user: PageUser) -> dict[str, object]:
    models = service.list_models(session, user=user)
    runs = {m.id: service.import_run(session, m) for m in models}
    return {"models": models, "runs": runs, "live": any(m.status == ModelStatus.importing for m in models)}


@router.get("/models")
def models_page(request: Request, session: SessionDep, user: PageUser) -> Response:
    notice = "import_started" if request.query_params.get("started") else None
    return render(request, "models/index.html", {**_rows(session, user), "notice": notice})


@router.get("/models/_rows")
def models_rows(request: Request, session: SessionDep, user: PageUser) -> Response:
    return render(request, "models/_rows.html", _rows(session, user))


@router.post("/models/local")
def register_local(
    request: Request,
    session: SessionDep,
    user: PageUser,
    name: Annotated[str, Form()],
    path: Annotated[str, Form()],
) -> Response:
    try:
        service.register_local(session, user=user, name=name, path=path)
    except RefineryError as exc:
        return render(
            request,
            "models/index.html",
            {**_rows(session, user), "local_error": exc.message, "form": {"name": name, "path": path}},
            status_code=422,
        )
    return RedirectResponse("/models?started=1", status_code=303)


@router.post("/models/hub")
def register_hub(
    request: Request,
    session: SessionDep,
    user: PageUser,
    repo_id: Annotated[str, Form()],
    revision: Annotated[str, Form()] = "main",
) -> Response:
    try:
        service.register_hub(
            session, user=user, repo_id=repo_id.strip(), revision=revision.strip() or "main", name=None
        )
    except RefineryError as exc:
        return render(
            request,
            "models/index.html",
            {
                **_rows(session, user),
                "hub_error": exc.message,
                "form": {"repo_id": repo_id, "revision": revision},
            },
            status_code=422,
        )
    return RedirectResponse("/models?started=1", status_code=303)


@router.post("/models/{model_id}/retry")
def retry(request: Request, session: SessionDep, user: PageUser, model_id: uuid.UUID) -> Response:
    model = service.get_model(session, model_id, user=user)
    service.retry_import(session, model, user=user)
    return RedirectResponse("/models?started=1", status_code=303)


@router.get("/models/{model_id}")
def model_detail(request: Request, session: SessionDep, user: PageUser, model_id: uuid.UUID) -> Response:
    model = service.get_model(session, model_id, user=user)
    context = {"model": model, "run": service.import_run(session, model), "bundled_id": BUNDLED_HUB_ID}
    return render(request, "models/detail.html", context)
