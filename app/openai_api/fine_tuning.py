"""OpenAI-compatible fine-tuning jobs under /v1/fine_tuning/jobs: create, list, retrieve, cancel, events and
checkpoints, shaped like OpenAI's objects. A job made here is a training job in the UI (with its live chart),
and a job made in the UI is listed here.

Mapping: ``model`` is a base model id or name, or a fine-tuned model (its LoRA is trained further, e.g.
reinforcement after supervised fine-tuning); ``training_file`` is a dataset (every record trains, see
/v1/files); ``validation_file`` is a second dataset used whole for validation; ``method`` ``supervised``
(SFT), ``dpo``, or ``reinforcement`` (GRPO whose reward is ``method.reinforcement.grader``'s score of each
generated answer; ``compute_multiplier`` × 4 answers per prompt); ``n_epochs``, ``batch_size``,
``learning_rate_multiplier`` (× 2e-4 for supervised LoRA, × 2e-5 for reinforcement,
× 5e-6 for DPO), ``beta``, ``seed``; ``suffix`` names the job and appears in ``fine_tuned_model``
(``ft:<base>:refinery:<suffix>:<id>``, see app/openai_api/models.py), usable in /v1/chat/completions, as is
each checkpoint's ``fine_tuned_model_checkpoint``. ``metadata`` is stored and filters the list
(``metadata[key]=value``); ``result_files`` holds a CSV of the per-step metrics, read with /v1/files; ``pause``
stops a job at its next checkpoint (status ``paused``, no worker held) and ``resume`` continues from there.
"""

from __future__ import annotations

import time
import uuid
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, Field
from sqlalchemy.orm import Session

from app.core.deps import SessionDep, csrf_protect
from app.core.errors import InvalidInput, NotFound
from app.core.i18n import _
from app.core.validation import Metadata
from app.datasets import service as datasets
from app.db.models import Dataset, DatasetStatus, DatasetVersion, Run, RunStatus, TrainingJob, User
from app.db.session import session_scope
from app.jobs import files as job_files
from app.jobs import service as jobs
from app.jobs.spec import Method
from app.openai_api import integrations
from app.openai_api.models import base_ids, find, fine_tuned_id
from app.openai_api.routes import by_public_id, file_id, get_file, problems, result_file_id
from app.runs import service as runs
from app.users.deps import CurrentUser

router = APIRouter(prefix="/v1/fine_tuning", tags=["openai-compatible"], dependencies=[Depends(csrf_protect)])
BASE_LEARNING_RATE = {"supervised": 2e-4, "dpo": 5e-6, "reinforcement": 2e-5}
ANSWERS_PER_PROMPT = 4  # GRPO's group at compute_multiplier 1
FILE_WAIT_SECONDS = 30.0  # a file still being validated is waited for this long, then "not ready"
STATUSES = {"validating": "validating_files"}

Auto = Literal["auto"]


class JobError(BaseModel):
    code: str
    message: str
    param: str | None


class FineTuningJob(BaseModel):
    """OpenAI's fine_tuning.job object, as Refinery fills it."""

    id: str
    object: Literal["fine_tuning.job"]
    created_at: int
    error: JobError | None = Field(description="Set when the job failed: the code, a sentence and the field.")
    fine_tuned_model: str | None = Field(description="The adapter to chat with once the job has succeeded.")
    finished_at: int | None
    hyperparameters: dict[str, float | int | None]
    model: str
    organization_id: str
    result_files: list[str]
    seed: int
    status: Literal["validating_files", "queued", "running", "paused", "succeeded", "failed", "cancelled"]
    trained_tokens: int | None
    training_file: str
    validation_file: str | None
    estimated_finish: int | None
    integrations: list[dict[str, Any]]
    metadata: dict[str, str] | None
    method: dict[str, Any]
    user_provided_suffix: str | None


class FineTuningJobList(BaseModel):
    object: Literal["list"]
    data: list[FineTuningJob]
    has_more: bool


class FineTuningEvent(BaseModel):
    id: str
    object: Literal["fine_tuning.job.event"]
    created_at: int
    level: Literal["info", "warn", "error"]
    message: str
    type: Literal["message", "metrics"]
    data: dict[str, Any]


class FineTuningEventList(BaseModel):
    object: Literal["list"]
    data: list[FineTuningEvent]
    has_more: bool


class FineTuningCheckpoint(BaseModel):
    id: str
    object: Literal["fine_tuning.job.checkpoint"]
    created_at: int
    fine_tuned_model_checkpoint: str
    fine_tuning_job_id: str
    metrics: dict[str, float | int | None]
    step_number: int


class FineTuningCheckpointList(BaseModel):
    object: Literal["list"]
    data: list[FineTuningCheckpoint]
    has_more: bool
    first_id: str | None
    last_id: str | None


class Hyperparameters(BaseModel):
    n_epochs: Annotated[int, Field(ge=1, le=100)] | Auto | None = Field(
        None, description="Passes over the training file."
    )
    batch_size: Annotated[int, Field(ge=1, le=1024)] | Auto | None = Field(None, description="Records per step.")
    learning_rate_multiplier: Annotated[float, Field(gt=0, le=100)] | Auto | None = Field(
        None, description="× the method's base learning rate."
    )
    beta: Annotated[float, Field(gt=0, le=10)] | Auto | None = Field(
        None, description="DPO only: how far the model may move from the base."
    )


class MethodOptions(BaseModel):
    hyperparameters: Hyperparameters = Field(default_factory=Hyperparameters)


class ReinforcementHyperparameters(Hyperparameters):
    compute_multiplier: Annotated[float, Field(gt=0, le=16)] | Auto | None = Field(
        None, description="× 4 answers generated per prompt and compared (GRPO's group), at least 2."
    )
    eval_interval: Annotated[int, Field(ge=1, le=1_000_000)] | Auto | None = Field(
        None, description="Accepted for OpenAI's scripts; the grader-scored evaluation runs after training."
    )
    eval_samples: Annotated[int, Field(ge=1, le=1_000_000)] | Auto | None = Field(
        None, description="Accepted for OpenAI's scripts; see eval_interval."
    )
    reasoning_effort: Literal["default", "low", "medium", "high"] | None = Field(
        None, description="Accepted for OpenAI's scripts; the models here have no reasoning effort setting."
    )


class ReinforcementOptions(BaseModel):
    grader: dict[str, Any] = Field(description="The grader whose score of each generated answer is the reward.")
    hyperparameters: ReinforcementHyperparameters = Field(default_factory=ReinforcementHyperparameters)


class MethodSpec(BaseModel):
    type: Literal["supervised", "dpo", "reinforcement"] = "supervised"
    supervised: MethodOptions | None = None
    dpo: MethodOptions | None = None
    reinforcement: ReinforcementOptions | None = None


class JobCreate(BaseModel):
    model: str = Field(max_length=300)
    training_file: str = Field(max_length=100)
    validation_file: str | None = Field(None, max_length=100)
    hyperparameters: Hyperparameters | None = None
    method: MethodSpec | None = None
    suffix: str | None = Field(None, max_length=64)
    seed: int | None = Field(None, ge=0, le=2**31 - 1)
    metadata: Metadata | None = Field(
        None, max_length=16, description="Up to 16 pairs; the list filters by them with metadata[key]=value."
    )
    integrations: list[dict[str, Any]] | None = None


def job_id(job: TrainingJob) -> str:
    return f"ftjob-{job.id.hex}"


def _epoch(value: Any) -> int | None:
    return int(value.timestamp()) if value is not None else None


def _version_file(session: Session, version_id: uuid.UUID | None) -> str | None:
    version = session.get(DatasetVersion, version_id) if version_id else None
    dataset = session.get(Dataset, version.dataset_id) if version else None
    return file_id(dataset) if dataset else None


def to_job(session: Session, job: TrainingJob, bases: dict[uuid.UUID, str] | None = None) -> dict[str, Any]:
    run = jobs.job_run(session, job)
    spec = job.spec
    method = _method_of(spec)
    hyper: dict[str, Any] = {
        "n_epochs": spec.get("num_epochs"),
        "batch_size": spec.get("batch_size"),
        "learning_rate_multiplier": round(float(spec.get("learning_rate", 0)) / BASE_LEARNING_RATE[method], 6),
    }
    if method == "dpo":
        hyper["beta"] = spec.get("dpo_beta")
    if method == "reinforcement":
        hyper["compute_multiplier"] = round(
            int(spec.get("num_generations", ANSWERS_PER_PROMPT)) / ANSWERS_PER_PROMPT, 4
        )
    error = None
    if run.status == RunStatus.failed:
        error = {
            "code": run.error_code or run.error_kind or "failed",
            "message": run.error_message or "",
            "param": None,
        }
    result = run.result or {}
    bases = bases if bases is not None else base_ids(session)
    estimated = None
    if run.status == RunStatus.running and run.eta_seconds:
        estimated = int(time.time() + run.eta_seconds)
    return {
        "id": job_id(job),
        "object": "fine_tuning.job",
        "created_at": _epoch(job.created_at),
        "error": error,
        "fine_tuned_model": fine_tuned_id(job, bases) if run.status == RunStatus.succeeded else None,
        "finished_at": _epoch(run.finished_at) if run.status.is_final else None,
        "hyperparameters": {k: v for k, v in hyper.items() if k != "beta"},
        "model": _trained_from(session, job, bases),
        "organization_id": "org-refinery",
        "result_files": [result_file_id(job)] if run.status.is_final and job_files.has_metrics(job) else [],
        "seed": spec.get("seed", 42),
        "status": STATUSES.get(jobs.job_status(run), jobs.job_status(run)),
        "trained_tokens": result.get("tokens_seen") if run.status == RunStatus.succeeded else None,
        "training_file": _version_file(session, job.dataset_version_id) or "",
        "validation_file": _version_file(session, job.validation_version_id),
        "estimated_finish": estimated,
        "integrations": integrations.described(spec),
        "metadata": job.job_metadata or None,
        "method": {
            "type": method,
            method: {"hyperparameters": hyper} | ({"grader": spec["grader"]} if method == "reinforcement" else {}),
        },
        "user_provided_suffix": job.name.removeprefix("ft-") if job.name.startswith("ft-") else None,
    }


def _trained_from(session: Session, job: TrainingJob, bases: dict[uuid.UUID, str]) -> str:
    """The model a job fine-tuned: its base model, or the fine-tuned model whose adapter it trained further."""
    start = job.spec.get("start_from_job_id")
    started = session.get(TrainingJob, uuid.UUID(start)) if start else None
    if started is not None:
        return fine_tuned_id(started, bases)
    return bases.get(job.base_model_id, f"base-{job.base_model_id}")


def _method_of(spec: dict[str, Any]) -> str:
    """OpenAI's name for a job's method: GRPO rewarded by a grader is its reinforcement fine-tuning."""
    if spec.get("method") == Method.dpo.value:
        return "dpo"
    if spec.get("method") in (Method.grpo.value, Method.rloo.value) and spec.get("grader"):
        return "reinforcement"
    return "supervised"


def get_ft_job(session: Session, user: User, ident: str) -> TrainingJob:
    missing = NotFound(_("No such fine-tuning job: '%(id)s'.", id=ident[:100]), code="job_not_found", field="job_id")
    return by_public_id(ident, "ftjob-", lambda key: jobs.get_job(session, key, user=user), missing)


def _ready_version(session: Session, user: User, ident: str, param: str) -> DatasetVersion:
    """The latest version of a file's dataset, waiting a little for a validation in progress."""
    dataset = get_file(session, user, ident)
    deadline = time.monotonic() + FILE_WAIT_SECONDS
    while dataset.status == DatasetStatus.validating and time.monotonic() < deadline:
        time.sleep(0.5)
        with session_scope() as fresh:  # a new transaction sees the worker's commits
            status = fresh.get(Dataset, dataset.id)
            if status is not None and status.status != DatasetStatus.validating:
                session.expire(dataset)
                break
    if dataset.status == DatasetStatus.validating:
        raise InvalidInput(
            _("The file %(id)s is still being validated; wait until its status is 'processed', then retry.", id=ident),
            code="file_not_ready",
            field=param,
        )
    issue = problems(dataset)
    if issue or dataset.status != DatasetStatus.ready:
        raise InvalidInput(
            _("The file %(id)s cannot be used: %(why)s", id=ident, why=issue or ""), code="invalid_file", field=param
        )
    return datasets.versions(session, dataset)[-1]


def _value(raw: Any, default: Any) -> Any:
    return default if raw in (None, "auto") else raw


@router.post("/jobs", response_model=FineTuningJob, summary="Create a fine-tuning job (OpenAI-compatible)")
def create_job(body: JobCreate, session: SessionDep, user: CurrentUser) -> dict[str, Any]:
    entry = find(session, user, body.model)
    start_from = entry.job if entry.job is not None and entry.listed else None
    if start_from is None and not entry.target.startswith("base-"):
        raise InvalidInput(
            _("Fine-tune a base model or a fine-tuned model; a checkpoint cannot be trained further here."),
            field="model",
        )
    base_model_id = start_from.base_model_id if start_from else uuid.UUID(entry.target.removeprefix("base-"))
    method = body.method.type if body.method else "supervised"
    reinforcement = body.method.reinforcement if body.method else None
    if method == "reinforcement" and reinforcement is None:
        raise InvalidInput(
            _("A reinforcement job needs method.reinforcement.grader: the grader whose score is the reward."),
            field="method.reinforcement.grader",
        )
    options: Any = None
    if body.method is not None:
        options = {"dpo": body.method.dpo, "supervised": body.method.supervised, "reinforcement": reinforcement}[method]
    hyper = (options.hyperparameters if options else None) or body.hyperparameters or Hyperparameters()
    version = _ready_version(session, user, body.training_file, "training_file")
    held_out = _ready_version(session, user, body.validation_file, "validation_file") if body.validation_file else None
    raw_spec: dict[str, Any] = {
        "method": {"dpo": Method.dpo.value, "reinforcement": Method.grpo.value}.get(method, Method.sft.value),
        "num_epochs": float(_value(hyper.n_epochs, 1)),
        "batch_size": int(_value(hyper.batch_size, 4)),
        "learning_rate": BASE_LEARNING_RATE[method] * float(_value(hyper.learning_rate_multiplier, 1.0)),
        "eval_steps": 50 if held_out or version.split_counts.get("validation") else 0,
    }
    if method == "dpo":
        raw_spec["dpo_beta"] = float(_value(hyper.beta, 0.1))
    if method == "reinforcement" and reinforcement is not None:
        raw_spec["grader"] = reinforcement.grader
        multiplier = getattr(hyper, "compute_multiplier", None)
        raw_spec["num_generations"] = max(2, min(64, round(ANSWERS_PER_PROMPT * float(_value(multiplier, 1.0)))))
        raw_spec["eval_steps"] = 0  # reinforcement evaluates by generating: the evaluation after training does
    if start_from is not None:  # a fine-tuned model: its adapter is trained further (e.g. reinforcement after SFT)
        raw_spec["start_from_job_id"] = str(start_from.id)
    if body.seed is not None:
        raw_spec["seed"] = body.seed
    raw_spec.update(integrations.spec_fields(body.integrations))
    job = jobs.create_job(
        session,
        user=user,
        name=f"ft-{body.suffix}" if body.suffix else "",
        model_id=base_model_id,
        version_id=version.id,
        validation_version_id=held_out.id if held_out else None,
        spec=jobs.parse_spec(raw_spec),
    )
    job.job_metadata = dict(body.metadata) if body.metadata else None
    session.flush()
    return to_job(session, job)


def _page(items: list[dict[str, Any]], after: str | None, limit: int) -> dict[str, Any]:
    if after:
        ids = [item["id"] for item in items]
        items = items[ids.index(after) + 1 :] if after in ids else []
    return {"object": "list", "data": items[:limit], "has_more": len(items) > limit}


@router.get(
    "/jobs", response_model=FineTuningJobList, summary="Your fine-tuning jobs, newest first (OpenAI-compatible)"
)
def list_ft_jobs(
    request: Request,
    session: SessionDep,
    user: CurrentUser,
    after: str | None = None,
    limit: int = Query(20, ge=1, le=100),
) -> dict[str, Any]:
    wanted = {
        key[len("metadata[") : -1]: value
        for key, value in request.query_params.items()
        if key.startswith("metadata[") and key.endswith("]")
    }
    if wanted:  # metadata is JSON: filtered here, over the caller's jobs newest first
        found = [
            j
            for j in jobs.list_jobs(session, user=user)
            if j.origin == "trained" and all((j.job_metadata or {}).get(k) == v for k, v in wanted.items())
        ]
        ids = [job_id(j) for j in found]
        start = (ids.index(after) + 1 if after in ids else len(ids)) if after else 0
        bases = base_ids(session)
        data = [to_job(session, j, bases) for j in found[start : start + limit]]
        return {"object": "list", "data": data, "has_more": len(found) > start + limit}
    cursor = None
    if after:
        try:
            cursor = uuid.UUID(after.removeprefix("ftjob-"))
        except ValueError:
            return {"object": "list", "data": [], "has_more": False}
    page, more = jobs.page_jobs(session, user=user, origin="trained", after=cursor, limit=limit)
    bases = base_ids(session)
    return {"object": "list", "data": [to_job(session, j, bases) for j in page], "has_more": more}


@router.get("/jobs/{job_id}", response_model=FineTuningJob, summary="A fine-tuning job")
def retrieve_ft_job(job_id: str, session: SessionDep, user: CurrentUser) -> dict[str, Any]:
    return to_job(session, get_ft_job(session, user, job_id))


@router.post("/jobs/{job_id}/cancel", response_model=FineTuningJob, summary="Cancel a fine-tuning job")
def cancel_ft_job(job_id: str, session: SessionDep, user: CurrentUser) -> dict[str, Any]:
    job = get_ft_job(session, user, job_id)
    jobs.cancel_job(session, job)
    return to_job(session, job)


@router.post(
    "/jobs/{job_id}/pause",
    response_model=FineTuningJob,
    summary="Pause a fine-tuning job: it stops at its next checkpoint and frees its worker",
)
def pause_ft_job(job_id: str, session: SessionDep, user: CurrentUser) -> dict[str, Any]:
    job = get_ft_job(session, user, job_id)
    jobs.pause_job(session, job)
    return to_job(session, job)


@router.post(
    "/jobs/{job_id}/resume",
    response_model=FineTuningJob,
    summary="Resume a paused fine-tuning job from its latest checkpoint",
)
def resume_ft_job(job_id: str, session: SessionDep, user: CurrentUser) -> dict[str, Any]:
    job = get_ft_job(session, user, job_id)
    jobs.resume_job(session, job)
    return to_job(session, job)


def _events(session: Session, job: TrainingJob, run: Run) -> list[dict[str, Any]]:
    """The run's event log and one metrics event per logged step, newest first."""
    out = [
        {
            "id": f"ftevent-{run.id.hex[:12]}-{event.seq}",
            "object": "fine_tuning.job.event",
            "created_at": _epoch(event.created_at),
            "level": event.level if event.level in ("info", "warn", "error") else "info",
            "message": event.message,
            "type": "message",
            "data": event.params or {},
        }
        for event in runs.list_events(session, run.id)
    ]
    total = (run.progress_params or {}).get("total") or job.spec.get("max_steps") or None
    for row in job_files.metrics(job):
        if "loss" not in row:
            continue
        of = f"/{total}" if total else ""
        data = {"step": row["step"], "train_loss": row["loss"], "total_steps": total}
        out.append(
            {
                "id": f"ftevent-{run.id.hex[:12]}-step-{row['step']}",
                "object": "fine_tuning.job.event",
                "created_at": int(row.get("time", 0)) or _epoch(job.created_at),
                "level": "info",
                "message": f"Step {row['step']}{of}: training loss={row['loss']:.4f}",
                "type": "metrics",
                "data": data,
            }
        )
    return sorted(out, key=lambda e: (e["created_at"] or 0, e["id"]), reverse=True)


@router.get(
    "/jobs/{job_id}/events", response_model=FineTuningEventList, summary="A fine-tuning job's events, newest first"
)
def list_ft_events(
    job_id: str, session: SessionDep, user: CurrentUser, after: str | None = None, limit: int = Query(20, ge=1, le=100)
) -> dict[str, Any]:
    job = get_ft_job(session, user, job_id)
    return _page(_events(session, job, jobs.job_run(session, job)), after, limit)


@router.get(
    "/jobs/{job_id}/checkpoints",
    response_model=FineTuningCheckpointList,
    summary="A fine-tuning job's checkpoints with their step metrics",
)
def list_ft_checkpoints(
    job_id: str, session: SessionDep, user: CurrentUser, after: str | None = None, limit: int = Query(10, ge=1, le=100)
) -> dict[str, Any]:
    job = get_ft_job(session, user, job_id)
    model = fine_tuned_id(job, base_ids(session))
    items = [
        {
            "id": f"ftckpt-{job.id.hex[:12]}-{c.step}",
            "object": "fine_tuning.job.checkpoint",
            "created_at": _epoch(job.created_at),
            "fine_tuned_model_checkpoint": f"{model}:ckpt-step-{c.step}",
            "fine_tuning_job_id": job_id,
            "metrics": {"step": c.step, "train_loss": c.loss, "valid_loss": c.eval_loss},
            "step_number": c.step,
        }
        for c in reversed(job_files.checkpoints(job))
    ]
    page = _page(items, after, limit)
    page["first_id"] = page["data"][0]["id"] if page["data"] else None
    page["last_id"] = page["data"][-1]["id"] if page["data"] else None
    return page
