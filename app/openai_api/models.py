"""``/v1/models`` with ids a person recognises, and the resolution of any model id a client sends.

* a base model's id is a slug of its name (``smollm2-135m-instruct``), unique in the install: the oldest model
  with a slug keeps it, a later one with the same slug gets ``<slug>-<first 6 hex of its id>``;
* a fine-tuned model's id is OpenAI's ``ft:`` style, ``ft:<base id>:refinery:<suffix>:<first 8 hex of the
  job id>``, the suffix being the ``suffix`` given to /v1/fine_tuning/jobs (or the job's name);
* a checkpoint is ``<fine-tuned id>:ckpt-step-<N>``, usable in chat completions but not listed (as on OpenAI).

The older ids (``base-<uuid>``, ``job-<uuid>``, ``job-<uuid>@checkpoint-<N>``) and a base model's display name
keep working everywhere a model is named.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from typing import Literal

from fastapi import APIRouter, Depends
from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.adapters import service as adapters
from app.core.deps import SessionDep, csrf_protect
from app.core.errors import InvalidInput, NotFound
from app.core.i18n import _
from app.db.models import BaseModelRecord, Deployment, TrainingJob, User
from app.playground import service as playground
from app.users.deps import CurrentUser

router = APIRouter(prefix="/v1", tags=["openai-compatible"], dependencies=[Depends(csrf_protect)])
ORGANIZATION = "refinery"
CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


class ModelObject(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelObject]


class ModelDeleted(BaseModel):
    id: str
    object: Literal["model"] = "model"
    deleted: bool


def slug(name: str) -> str:
    text = re.sub(r"[^a-z0-9._-]+", "-", name.strip().lower()).strip("-.")
    return text[:60] or "model"


def base_ids(session: Session) -> dict[uuid.UUID, str]:
    """Every base model's readable id (install-wide, so the same model has the same id for every user)."""
    taken: dict[str, uuid.UUID] = {}
    out: dict[uuid.UUID, str] = {}
    for model_id, name in session.execute(
        select(BaseModelRecord.id, BaseModelRecord.name).order_by(BaseModelRecord.created_at, BaseModelRecord.id)
    ):
        readable = slug(name)
        if readable in taken:
            readable = f"{readable}-{model_id.hex[:6]}"
        taken[readable] = model_id
        out[model_id] = readable
    return out


def suffix_of(job: TrainingJob) -> str:
    return job.name.removeprefix("ft-") if job.name.startswith("ft-") else job.name


def fine_tuned_id(job: TrainingJob, bases: dict[uuid.UUID, str]) -> str:
    base = bases.get(job.base_model_id, f"base-{job.base_model_id.hex[:6]}")
    return f"ft:{base}:{ORGANIZATION}:{slug(suffix_of(job)) if suffix_of(job) else ''}:{job.id.hex[:8]}"


@dataclass(frozen=True)
class Entry:
    id: str  # what /v1 shows
    target: str  # what the inference process is asked for
    label: str
    created: int
    owned_by: str
    listed: bool
    job: TrainingJob | None = None
    deployment: bool = False


def catalogue(session: Session, user: User) -> list[Entry]:
    """Everything the caller may chat with: base models, succeeded adapters, complete checkpoints."""
    bases = base_ids(session)
    rows: dict[uuid.UUID, BaseModelRecord | TrainingJob] = {}
    entries = []
    for chat in playground.chat_models(session, user=user):
        if chat.group == "deployment":
            continue  # added under their own names below
        kind, _sep, rest = chat.name.partition("-")
        ident, _at, checkpoint = rest.partition("@")
        key = uuid.UUID(ident)
        row: BaseModelRecord | TrainingJob | None = rows.get(key)
        if row is None:
            row = session.get(BaseModelRecord, key) if kind == "base" else session.get(TrainingJob, key)
        if row is None:
            continue
        rows[key] = row
        owner = "refinery" if row.owner_id is None else "user"
        created = int(row.created_at.timestamp())
        if isinstance(row, BaseModelRecord):
            entries.append(Entry(bases[row.id], chat.name, chat.label, created, owner, True))
            continue
        public = fine_tuned_id(row, bases)
        step = CHECKPOINT.match(checkpoint)
        if checkpoint and step:
            ident = f"{public}:ckpt-step-{step.group(1)}"
            entries.append(Entry(ident, chat.name, chat.label, created, owner, False, row))
        elif not checkpoint:
            entries.append(Entry(public, chat.name, chat.label, created, owner, True, row))
    return entries + _deployments(session, user, entries)


def _deployments(session: Session, user: User, entries: list[Entry]) -> list[Entry]:
    """Each deployment under its own name, resolving to the model it serves at this moment: a request names
    ``support-bot`` and gets whatever the last promotion or roll-back left there."""
    by_target = {entry.target: entry for entry in entries}
    found = []
    for deployment in session.scalars(select(Deployment).where(Deployment.owner_id == user.id)):
        served = by_target.get(deployment.target)
        if served is not None:
            created = int(deployment.created_at.timestamp())
            found.append(Entry(deployment.name, served.target, deployment.name, created, "user", True, None, True))
    return found


def find(session: Session, user: User, name: str) -> Entry:
    """The entry a client means: its readable id, an older id, or a base model's display name; OpenAI's 404
    in OpenAI's words otherwise."""
    entries = catalogue(session, user)
    older = _older_id(name)
    for entry in entries:
        if name == entry.id or older == entry.target:
            return entry
    for entry in entries:
        if entry.target.startswith("base-") and entry.label == name:
            return entry
    raise NotFound(
        _("The model '%(model)s' does not exist or you do not have access to it.", model=name[:200]),
        code="model_not_found",
        field="model",
    )


def _older_id(name: str) -> str:
    """``base-<uuid>`` / ``job-<uuid>[@checkpoint-N]`` with the uuid in any spelling (dashes or none)."""
    kind, _sep, rest = name.partition("-")
    ident, at, checkpoint = rest.partition("@")
    if kind not in ("base", "job"):
        return name
    try:
        return f"{kind}-{uuid.UUID(ident)}{at}{checkpoint}"
    except ValueError:
        return name


def resolve_model(session: Session, user: User, name: str) -> str:
    """The inference name for any model id a client sends."""
    return find(session, user, name).target


def _object(entry: Entry) -> ModelObject:
    return ModelObject(id=entry.id, created=entry.created, owned_by=entry.owned_by)


@router.get("/models", response_model=ModelList, summary="Models you can use (OpenAI-compatible)")
def list_models(session: SessionDep, user: CurrentUser) -> ModelList:
    return ModelList(data=[_object(e) for e in catalogue(session, user) if e.listed])


@router.get("/models/{model}", response_model=ModelObject, summary="One model (OpenAI-compatible)")
def retrieve_model(model: str, session: SessionDep, user: CurrentUser) -> ModelObject:
    return _object(find(session, user, model))


@router.delete(
    "/models/{model}",
    response_model=ModelDeleted,
    summary="Delete a fine-tuned model: the adapter, its checkpoints and evaluations (refused while in use)",
)
def delete_model(model: str, session: SessionDep, user: CurrentUser) -> ModelDeleted:
    entry = find(session, user, model)
    if entry.job is None or not entry.listed:
        raise InvalidInput(
            _("Only a fine-tuned model can be deleted; '%(model)s' is a base model or a checkpoint.", model=model[:99]),
            code="model_not_deletable",
            field="model",
        )
    adapters.delete_adapter(session, adapters.get_adapter(session, entry.job.id, user=user), user=user)
    return ModelDeleted(id=entry.id, deleted=True)
