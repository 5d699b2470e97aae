"""Training jobs: validate a spec against its model and data, launch, watch, cancel, download."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError
from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session, selectinload

from app.basemodels import service as models
from app.core.config import get_settings
from app.core.errors import Conflict, InvalidInput, NotFound
from app.core.i18n import _
from app.core.outbound import OutboundRefused, check_url
from app.core.ownership import get_owned, referenced
from app.core.validation import describe_error
from app.datasets import service as datasets
from app.db.models import BaseModelRecord, Dataset, DatasetVersion, ModelStatus, Run, RunStatus, TrainingJob, User
from app.jobs.card import model_card
from app.jobs.files import checkpoints, directory_zip, final_dir
from app.jobs.files import tensorboard_zip as events_zip
from app.jobs.spec import METHOD_KINDS, Adapter, Method, Problem, TrainingSpec, check_compatibility
from app.runs import service as runs

TRAIN_KIND = "training"


def parse_spec(raw: dict[str, Any]) -> TrainingSpec:
    try:
        return TrainingSpec.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or None
        raise InvalidInput(describe_error(dict(first)), field=field) from exc


def usable_versions(session: Session, *, user: User) -> list[tuple[Dataset, DatasetVersion]]:
    pairs = []
    for dataset in datasets.list_datasets(session, user=user):
        for version in datasets.versions(session, dataset):
            pairs.append((dataset, version))
    return pairs


def owned_version(session: Session, version_id: uuid.UUID, *, user: User) -> tuple[Dataset, DatasetVersion]:
    version = session.get(DatasetVersion, version_id)
    dataset = session.get(Dataset, version.dataset_id) if version else None
    if version is None or dataset is None or dataset.owner_id != user.id:
        raise NotFound(_("No such dataset version."))
    return dataset, version


def problems_for(
    session: Session, spec: TrainingSpec, *, model: BaseModelRecord, version: DatasetVersion, user: User
) -> list[Problem]:
    problems = check_compatibility(
        spec,
        kinds=version.kind_counts,
        context_length=model.context_length,
        cuda=get_settings().gpu_workers,
        train_records=version.split_counts.get("train", 0),
    )
    if (
        spec.method in (Method.grpo, Method.rloo)
        and spec.reward_job_id
        and not _is_reward_model(session, spec.reward_job_id, user=user)
    ):
        problems.append(
            Problem(
                field="reward_job_id",
                message=_(
                    "The chosen reward model is not one of your succeeded reward-model jobs; pick another or "
                    "wait for it to finish."
                ),
            )
        )
    if spec.start_from_job_id:
        problem = _start_problem(session, spec, model=model, user=user)
        if problem:
            problems.append(Problem(field="start_from_job_id", message=problem))
    problems += mix_problems(session, spec, version=version, user=user)
    return problems


def mix_problems(session: Session, spec: TrainingSpec, *, version: DatasetVersion, user: User) -> list[Problem]:
    """Each dataset version mixed in must be the user's, another than the job's, used once, and hold training
    records of a kind the method reads."""
    problems: list[Problem] = []
    seen = {version.id}
    readable = METHOD_KINDS[spec.method.value]
    for part in spec.mix:
        dataset, mixed = owned_version(session, part.version_id, user=user)
        name = f"{dataset.name} v{mixed.number}"
        if mixed.id in seen:
            message = _("%(name)s is mixed in twice, or is the job's own dataset: mix in each version once.", name=name)
        elif not any(mixed.kind_counts.get(kind) for kind in readable):
            message = _(
                "%(name)s holds no records %(method)s trains on (%(kinds)s): mix in another version.",
                name=name,
                method=spec.method.value.upper(),
                kinds=", ".join(sorted(readable)),
            )
        elif not mixed.split_counts.get("train"):
            message = _("%(name)s has no records in its train split: mix in another version.", name=name)
        else:
            seen.add(mixed.id)
            continue
        problems.append(Problem(field="mix", message=message))
    return problems


def startable_jobs(session: Session, *, user: User, model_id: uuid.UUID | None = None) -> list[TrainingJob]:
    """This user's succeeded LoRA jobs (trained here or uploaded): what a new job can start from."""
    return [
        job
        for job in list_jobs(session, user=user)
        if job.spec.get("adapter") in (Adapter.lora.value, Adapter.qlora.value)
        and job.spec.get("method") != Method.reward.value
        and (model_id is None or job.base_model_id == model_id)
        and job_run(session, job).status == RunStatus.succeeded
    ]


def _start_problem(session: Session, spec: TrainingSpec, *, model: BaseModelRecord, user: User) -> str | None:
    try:
        start_id = uuid.UUID(spec.start_from_job_id)
    except ValueError:
        return _("No such job to start from; pick one of the list.")
    start = session.get(TrainingJob, start_id)
    if start is None or start.owner_id != user.id:
        return _("No such job to start from; pick one of the list.")
    if job_run(session, start).status != RunStatus.succeeded:
        return _("The job to start from has not succeeded; wait for it, or pick another.")
    if start.base_model_id != model.id:
        return _("The job to start from was trained on another base model; pick this job's base model, or another job.")
    if start.spec.get("adapter") not in (Adapter.lora.value, Adapter.qlora.value) or spec.adapter not in (
        Adapter.lora,
        Adapter.qlora,
    ):
        return _("Only a LoRA or QLoRA adapter can be trained further; start from a LoRA job with a LoRA adapter.")
    if start.spec.get("method") == Method.reward.value or spec.method == Method.reward:
        return _("A reward model's adapter scores answers; start from a job that writes them.")
    return None


def reward_models(session: Session, *, user: User) -> list[TrainingJob]:
    """This user's succeeded reward-model jobs: what GRPO and RLOO can be driven by."""
    return [
        job
        for job in list_jobs(session, user=user)
        if job.spec.get("method") == Method.reward.value and job_run(session, job).status == RunStatus.succeeded
    ]


def _is_reward_model(session: Session, job_id: str, *, user: User) -> bool:
    return any(str(job.id) == job_id.lower() for job in reward_models(session, user=user))


def create_job(
    session: Session,
    *,
    user: User,
    name: str,
    model_id: uuid.UUID,
    version_id: uuid.UUID,
    spec: TrainingSpec,
    general_version_id: uuid.UUID | None = None,
    validation_version_id: uuid.UUID | None = None,
    cloned_from: TrainingJob | None = None,
    resume_checkpoint: str | None = None,
) -> TrainingJob:
    model = models.get_model(session, model_id, user=user)
    if model.status != ModelStatus.ready:
        raise InvalidInput(_("That model is not ready yet; wait for its import to finish."), field="model_id")
    dataset, version = owned_version(session, version_id, user=user)
    for extra in (general_version_id, validation_version_id):
        if extra is not None:
            owned_version(session, extra, user=user)
    problems = problems_for(session, spec, model=model, version=version, user=user)
    if problems:
        raise InvalidInput(problems[0].message, field=problems[0].field, code="incompatible")
    if resume_checkpoint:
        _check_resumable(session, cloned_from, resume_checkpoint, model_id=model.id, spec=spec)
    if spec.mlflow_tracking_uri and spec.mlflow_tracking_uri.rstrip("/") != get_settings().mlflow_tracking_uri.rstrip(
        "/"
    ):
        try:  # a tracker the user names is a user-given address like a judge's
            check_url(spec.mlflow_tracking_uri, unresolvable_ok=True)
        except OutboundRefused as exc:
            raise InvalidInput(
                _("The MLflow tracking URI cannot be used: %(reason)s.", reason=exc.reason), field="mlflow_tracking_uri"
            ) from exc
    job = TrainingJob(
        owner_id=user.id,
        name=(name.strip() or f"{model.name} · {dataset.name} v{version.number}")[:200],
        base_model_id=model.id,
        dataset_version_id=version.id,
        general_version_id=general_version_id,
        validation_version_id=validation_version_id,
        spec=spec.model_dump(mode="json"),
        storage_key="",
        cloned_from_id=cloned_from.id if cloned_from else None,
        resume_checkpoint=resume_checkpoint or None,
    )
    session.add(job)
    session.flush()
    job.storage_key = f"jobs/{job.id.hex}"
    run = runs.create_run(session, kind=TRAIN_KIND, owner=user, params={"job_id": str(job.id)}, queue="gpu")
    job.run_id = run.id
    session.flush()
    return job


# what lists of jobs show beside each job: its run, base model and dataset version (one query each)
LIST_LOADS = (
    selectinload(TrainingJob.run),
    selectinload(TrainingJob.base_model),
    selectinload(TrainingJob.dataset_version).selectinload(DatasetVersion.dataset),
)


def list_jobs(session: Session, *, user: User) -> list[TrainingJob]:
    stmt = select(TrainingJob).where(TrainingJob.owner_id == user.id).order_by(TrainingJob.created_at.desc())
    return list(session.scalars(stmt.options(*LIST_LOADS)))


def page_jobs(
    session: Session, *, user: User, origin: str, after: uuid.UUID | None, limit: int
) -> tuple[list[TrainingJob], bool]:
    """A page of the user's jobs of one origin, newest first, after the job ``after`` (a cursor): paged in SQL,
    with what each job shows beside it preloaded (LIST_LOADS). (jobs, whether more follow)."""
    stmt = (
        select(TrainingJob)
        .where(TrainingJob.owner_id == user.id, TrainingJob.origin == origin)
        .order_by(TrainingJob.created_at.desc(), TrainingJob.id.desc())
        .options(*LIST_LOADS)
    )
    if after is not None:
        cursor = session.execute(
            select(TrainingJob.created_at, TrainingJob.id).where(
                TrainingJob.id == after, TrainingJob.owner_id == user.id
            )
        ).first()
        if cursor is None:
            return [], False
        stmt = stmt.where(
            or_(
                TrainingJob.created_at < cursor.created_at,
                and_(TrainingJob.created_at == cursor.created_at, TrainingJob.id < cursor.id),
            )
        )
    rows = list(session.scalars(stmt.limit(limit + 1)))
    return rows[:limit], len(rows) > limit


def get_job(session: Session, job_id: uuid.UUID, *, user: User) -> TrainingJob:
    return get_owned(session, TrainingJob, job_id, user=user, message=_("No such training job."))


def job_run(session: Session, job: TrainingJob) -> Run:
    return runs.required_run(session, job.run_id)


def job_status(run: Run) -> str:
    """A job's state as users see it: validating → queued → running → succeeded | failed | cancelled. The spec
    is checked against the model and data before the job is queued; "validating" is the child reading and
    tokenising the dataset version, where problems in the records themselves surface."""
    if run.status == RunStatus.running and run.progress_code == "tokenising":
        return "validating"
    return run.status.value


def run_seconds(run: Run) -> float | None:
    """How long a run has trained: until it ended, or until now while it runs (None before it starts)."""
    if run.started_at is None:
        return None
    end = run.finished_at or datetime.now(UTC)  # both aware: UTCDateTime columns
    return max(0.0, (end - run.started_at).total_seconds())


def cancel_job(session: Session, job: TrainingJob) -> Run:
    return runs.request_cancel(session, job_run(session, job))


def pause_job(session: Session, job: TrainingJob) -> Run:
    """Stop at the next checkpoint and free the worker; the job keeps its checkpoints and curve."""
    if job.origin != "trained":
        raise Conflict(_("Only a training job can be paused."))
    return runs.request_pause(session, job_run(session, job))


def resume_job(session: Session, job: TrainingJob) -> Run:
    """Queue a paused job again: it continues from its latest complete checkpoint."""
    return runs.resume(session, job_run(session, job))


def is_live(run: Run) -> bool:
    """Whether a job page keeps polling: while the job waits for a worker or trains (not while paused)."""
    return run.status in (RunStatus.queued, RunStatus.running)


def _check_resumable(
    session: Session, source: TrainingJob | None, name: str, *, model_id: uuid.UUID, spec: TrainingSpec
) -> None:
    if source is None or name not in {c.name for c in checkpoints(source)}:
        raise InvalidInput(_("That checkpoint does not exist or is not complete; pick one from the job's page."))
    if not job_run(session, source).status.is_final:
        raise InvalidInput(_("Resume from a checkpoint once its job has stopped, or cancel the job first."))
    source_spec = TrainingSpec.model_validate(source.spec)
    if source.base_model_id != model_id or (source_spec.method, source_spec.adapter) != (spec.method, spec.adapter):
        raise InvalidInput(
            _(
                "A checkpoint resumes with the same base model, method and adapter; clone the job instead to "
                "change those."
            ),
            field="adapter",
        )


def tensorboard_zip(job: TrainingJob) -> bytes:
    data = events_zip(job)
    if data is None:
        raise Conflict(_("The job has logged no step yet, so there are no TensorBoard events."))
    return data


def adapter_zip(session: Session, job: TrainingJob) -> Iterator[bytes]:
    """Checks first (so a refusal is a clean error), then streams the zip from a temporary file: full
    fine-tuning weights can be gigabytes."""

    run = job_run(session, job)
    directory = final_dir(job)
    if run.status != RunStatus.succeeded or not directory.is_dir():
        raise Conflict(_("The adapter is available once the job has succeeded."))
    base = models.public_base(referenced(session, BaseModelRecord, job.base_model_id))
    return directory_zip(directory, model_card(session, job), base=base)


@dataclass(frozen=True)
class JobLabel:
    """What a job was trained from, as lists and the comparison show it."""

    model: str
    dataset: str  # "name vN"; for an adapter uploaded rather than trained here, says so


def job_label(session: Session, job: TrainingJob) -> JobLabel:
    """Its keys restrict deletion, so the model and data are there; lists preload them (LIST_LOADS)."""
    model = referenced(session, BaseModelRecord, job.base_model_id)
    if job.dataset_version_id is None:
        return JobLabel(model.name, _("uploaded adapter"))
    version = referenced(session, DatasetVersion, job.dataset_version_id)
    return JobLabel(model.name, version_label(session, version))


def version_label(session: Session, version: DatasetVersion) -> str:
    return f"{referenced(session, Dataset, version.dataset_id).name} v{version.number}"
