"""Training jobs: validate a spec against its model and data, launch, watch, cancel, download."""

from __future__ import annotations

import json
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session

from app.basemodels import service as models
from app.core.config import get_settings
from app.core.errors import Conflict, InvalidInput, NotFound
from app.core.i18n import _
from app.core.ownership import get_owned
from app.core.validation import describe_error
from app.datasets import service as datasets
from app.datasets.storage import artifact_path
from app.db.models import BaseModelRecord, Dataset, DatasetVersion, ModelStatus, Run, RunStatus, TrainingJob, User
from app.jobs.card import model_card
from app.jobs.checkpoints import COMPLETE_MARKER
from app.jobs.spec import Method, Problem, TrainingSpec, check_compatibility
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
    return problems


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


def list_jobs(session: Session, *, user: User) -> list[TrainingJob]:
    stmt = select(TrainingJob).where(TrainingJob.owner_id == user.id).order_by(TrainingJob.created_at.desc())
    return list(session.scalars(stmt))


def page_jobs(
    session: Session, *, user: User, origin: str, after: uuid.UUID | None, limit: int
) -> tuple[list[TrainingJob], bool]:
    """A page of the user's jobs of one origin, newest first, after the job ``after`` (a cursor): paged in SQL,
    with each job's run loaded in the same query. (jobs, whether more follow)."""
    stmt = (
        select(TrainingJob, Run)
        .outerjoin(Run, Run.id == TrainingJob.run_id)
        .where(TrainingJob.owner_id == user.id, TrainingJob.origin == origin)
        .order_by(TrainingJob.created_at.desc(), TrainingJob.id.desc())
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
    rows = session.execute(stmt.limit(limit + 1)).all()
    return [job for job, _run in rows[:limit]], len(rows) > limit


def get_job(session: Session, job_id: uuid.UUID, *, user: User) -> TrainingJob:
    return get_owned(session, TrainingJob, job_id, user=user, message=_("No such training job."))


def job_run(session: Session, job: TrainingJob) -> Run:
    run = session.get(Run, job.run_id) if job.run_id else None
    assert run is not None
    return run


def job_status(run: Run) -> str:
    """A job's state as users see it: validating → queued → running → succeeded | failed | cancelled. The spec
    is checked against the model and data before the job is queued; "validating" is the child reading and
    tokenising the dataset version, where problems in the records themselves surface."""
    if run.status == RunStatus.running and run.progress_code == "tokenising":
        return "validating"
    return run.status.value


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


def has_metrics(job: TrainingJob) -> bool:
    """Whether the job logged anything (without reading the log)."""
    path = artifact_path(f"{job.storage_key}/metrics.jsonl")
    return path.is_file() and path.stat().st_size > 0


def metrics(job: TrainingJob, *, after_step: int = -1) -> list[dict[str, Any]]:
    """Logged rows after a step (step 0 holds the evaluation before training); a resumed attempt re-logs
    steps after its checkpoint, so the last row wins."""
    path = artifact_path(f"{job.storage_key}/metrics.jsonl")
    if not path.is_file():
        return []
    by_step: dict[tuple[int, bool], dict[str, Any]] = {}
    with path.open() as handle:
        for line in handle:
            try:
                row = json.loads(line)
            except ValueError:
                continue  # a line being written right now
            if isinstance(row, dict) and row.get("step", 0) > after_step:
                by_step[(row["step"], "eval_loss" in row)] = row
    return [by_step[key] for key in sorted(by_step)]


def checkpoints(job: TrainingJob) -> list[dict[str, Any]]:
    """The job's complete checkpoints (a checkpoint being written, or cut off by a kill, is not listed),
    each with the metrics logged at its step."""
    from app.jobs.checkpoints import complete_checkpoints

    logged = metrics(job)
    rows = {row["step"]: row for row in logged if "loss" in row}
    evals = {row["step"]: row["eval_loss"] for row in logged if "eval_loss" in row}
    found = []
    for step, path in complete_checkpoints(artifact_path(f"{job.storage_key}/checkpoints")):
        found.append(
            {
                "name": path.name,
                "step": step,
                "loss": rows.get(step, {}).get("loss"),
                "eval_loss": evals.get(step),
                "size_bytes": sum(p.stat().st_size for p in path.rglob("*") if p.is_file()),
            }
        )
    return found


def _check_resumable(
    session: Session, source: TrainingJob | None, name: str, *, model_id: uuid.UUID, spec: TrainingSpec
) -> None:
    if source is None or name not in {c["name"] for c in checkpoints(source)}:
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


def final_dir(job: TrainingJob) -> Path:
    return artifact_path(f"{job.storage_key}/final")


def adapter_zip(session: Session, job: TrainingJob) -> Iterator[bytes]:
    """Checks first (so a refusal is a clean error), then streams the zip from a temporary file: full
    fine-tuning weights can be gigabytes."""

    run = job_run(session, job)
    directory = final_dir(job)
    if run.status != RunStatus.succeeded or not directory.is_dir():
        raise Conflict(_("The adapter is available once the job has succeeded."))
    return directory_zip(directory, model_card(session, job))


def directory_zip(directory: Path, card: str) -> Iterator[bytes]:
    """A directory's safetensors and configuration (never pickle files) and the model card, as a zip streamed
    from a temporary file."""
    import tempfile

    files = [
        p
        for p in sorted(directory.rglob("*"))
        if p.is_file()
        and p.name not in ("README.md", COMPLETE_MARKER)
        and p.suffix not in (".bin", ".pt", ".pth", ".pkl")
    ]

    def chunks() -> Iterator[bytes]:
        with tempfile.TemporaryFile() as spool:
            with zipfile.ZipFile(spool, "w", compression=zipfile.ZIP_DEFLATED) as archive:
                for path in files:
                    archive.write(path, path.relative_to(directory).as_posix())
                archive.writestr("README.md", card)
            spool.seek(0)
            while block := spool.read(1024 * 1024):
                yield block

    return chunks()


def model_shape(model: BaseModelRecord) -> Any:
    from app.jobs.estimate import ModelShape

    config_path = artifact_path(f"{model.storage_key}/config.json") if model.storage_key else None
    config = json.loads(config_path.read_text()) if config_path and config_path.is_file() else {}
    return ModelShape(
        parameters=model.num_parameters or 0,
        hidden_size=int(config.get("hidden_size", 768)),
        layers=int(config.get("num_hidden_layers", 12)),
        vocab_size=int(config.get("vocab_size", 32000)),
        intermediate_size=config.get("intermediate_size"),
    )


def measured_tokens_per_second(session: Session, model: BaseModelRecord) -> float | None:
    """Throughput of this user's earlier finished jobs on the same model (the basis of the time estimate)."""
    stmt = (
        select(Run.result)
        .join(TrainingJob, TrainingJob.run_id == Run.id)
        .where(TrainingJob.base_model_id == model.id, Run.status == RunStatus.succeeded)
    )
    rates = [
        r["tokens_seen"] / r["seconds"]
        for r in session.scalars(stmt)
        if r and r.get("tokens_seen") and r.get("seconds")
    ]
    return sum(rates) / len(rates) if rates else None


def estimate(
    session: Session,
    spec: TrainingSpec,
    *,
    model: BaseModelRecord,
    version: DatasetVersion,
    gpu_gib: float,
    user: User,
) -> dict[str, Any]:
    from app.jobs.estimate import GIB, estimate_memory, smaller_configuration

    shape = model_shape(model)
    memory = estimate_memory(spec, shape, gpu=True)
    budget = gpu_gib * GIB
    suggestion = None
    if memory.total > budget:
        smaller = smaller_configuration(spec, shape, budget)
        if smaller is not None:
            changed = {k: v for k, v in smaller.model_dump(mode="json").items() if v != spec.model_dump(mode="json")[k]}
            suggestion = {"changes": changed, "total": round(estimate_memory(smaller, shape).total / GIB, 2)}
    mean_tokens = ((version.stats or {}).get("tokens") or {}).get("mean") or 0
    train_records = version.split_counts.get("train", 0)
    tokens = int(mean_tokens * train_records)
    if spec.max_steps:
        tokens = min(tokens, int(spec.max_steps * spec.effective_batch * (mean_tokens or spec.max_seq_length)))
        epochs = 1.0
    else:
        epochs = spec.num_epochs
    rate = measured_tokens_per_second(session, model)
    return {
        "memory": memory.as_gib(),
        "trainable": memory.trainable_parameters,
        "fits": memory.total <= budget,
        "gpu_gib": gpu_gib,
        # what a CPU worker's RAM must hold, shown while no GPU workers are configured
        "cpu_memory_gib": None
        if get_settings().gpu_workers
        else round(estimate_memory(spec, shape, gpu=False).total / GIB, 1),
        "suggestion": suggestion,
        "tokens": int(tokens * epochs),
        "rate": rate,
        "seconds": (tokens * epochs / rate) if rate else None,
        "problems": problems_for(session, spec, model=model, version=version, user=user),
    }


COMPARED_RESULTS = ("train_loss", "eval_loss", "steps", "epochs", "tokens_seen", "seconds", "trainable_parameters")


def compare(session: Session, jobs: list[TrainingJob]) -> dict[str, Any]:
    """Several runs side by side: their loss curves, the spec fields that differ, the final metrics."""
    specs = [TrainingSpec.model_validate(job.spec).model_dump(mode="json") for job in jobs]
    differing = [name for name in TrainingSpec.model_fields if len({json.dumps(s[name]) for s in specs}) > 1]
    context: dict[str, list[str]] = {"models": [], "datasets": []}
    for job in jobs:
        model = session.get(BaseModelRecord, job.base_model_id)
        version = session.get(DatasetVersion, job.dataset_version_id) if job.dataset_version_id else None
        dataset = session.get(Dataset, version.dataset_id) if version else None
        context["models"].append(model.name if model else "?")
        context["datasets"].append(f"{dataset.name if dataset else '?'} v{version.number if version else '?'}")
    curves = []
    for job in jobs:
        rows = metrics(job)
        curves.append(
            {
                "name": job.name,
                "loss": [[r["step"], r["loss"]] for r in rows if "loss" in r],
                "eval_loss": [[r["step"], r["eval_loss"]] for r in rows if "eval_loss" in r],
            }
        )
    results = [job_run(session, job).result or {} for job in jobs]
    return {
        "jobs": jobs,
        "runs": [job_run(session, job) for job in jobs],
        "differing": [(name, [s[name] for s in specs]) for name in differing],
        "same_model": len(set(context["models"])) == 1,
        "same_dataset": len(set(context["datasets"])) == 1,
        "models": context["models"],
        "datasets": context["datasets"],
        "results": [(key, [r.get(key) for r in results]) for key in COMPARED_RESULTS],
        "curves": curves,
    }
