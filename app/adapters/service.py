"""Registry rows and lineage of adapters. An adapter is a succeeded training job's final weights (a PEFT
adapter, or full weights for full and freeze fine-tuning); its checkpoints are listed with it."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from app.core.errors import Conflict, InvalidInput, NotFound
from app.core.i18n import _
from app.core.ownership import referenced
from app.datasets.storage import artifact_path, remove_tree
from app.db.models import (
    BaseModelRecord,
    Dataset,
    DatasetVersion,
    Evaluation,
    Feedback,
    Judgement,
    Run,
    RunStatus,
    TrainingJob,
    Upload,
    User,
)
from app.jobs import files as job_files
from app.jobs import service as jobs
from app.jobs.card import model_card
from app.jobs.checkpoints import COMPLETE_MARKER, complete_checkpoints
from app.jobs.spec import Adapter
from app.runs import service as runs

TAG_RE = re.compile(r"^[\w.:-]{1,40}$")
MAX_TAGS = 12


@dataclass
class AdapterRow:
    job: TrainingJob
    run: Run
    model: BaseModelRecord
    dataset: Dataset | None
    version: DatasetVersion | None
    evaluation: Evaluation | None  # the latest finished one
    checkpoints: int
    size_bytes: int
    owner: str
    metrics: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"job-{self.job.id}"


def _size(path: Any) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else 0


def _latest_evaluations(session: Session, job_ids: list[uuid.UUID]) -> dict[uuid.UUID, Evaluation]:
    """Each job's newest finished evaluation, for many jobs in one query."""
    latest: dict[uuid.UUID, Evaluation] = {}
    stmt = select(Evaluation).where(Evaluation.job_id.in_(job_ids)).order_by(Evaluation.created_at.desc())
    for evaluation in session.scalars(stmt) if job_ids else []:
        if evaluation.summary:  # finished (a JSON column's null is not SQL's NULL everywhere)
            latest.setdefault(evaluation.job_id, evaluation)
    return latest


def _row(session: Session, job: TrainingJob, run: Run, evaluation: Evaluation | None) -> AdapterRow:
    version = referenced(session, DatasetVersion, job.dataset_version_id) if job.dataset_version_id else None
    result = run.result or {}
    return AdapterRow(
        job=job,
        run=run,
        model=referenced(session, BaseModelRecord, job.base_model_id),
        dataset=referenced(session, Dataset, version.dataset_id) if version else None,
        version=version,
        evaluation=evaluation,
        checkpoints=len(complete_checkpoints(artifact_path(f"{job.storage_key}/checkpoints"))),
        size_bytes=int(result.get("size_bytes") or _size(job_files.final_dir(job))),
        owner=referenced(session, User, job.owner_id).email,
        metrics={k: result.get(k) for k in ("train_loss", "eval_loss", "base_eval_loss", "steps", "tokens_seen")},
    )


def list_adapters(session: Session, *, user: User, tag: str = "") -> list[AdapterRow]:
    found = []
    for job in jobs.list_jobs(session, user=user):  # runs, models and dataset versions preloaded
        run = jobs.job_run(session, job)
        if run.status != RunStatus.succeeded or not job_files.final_dir(job).is_dir():
            continue
        if tag and tag not in (job.tags or []):
            continue
        found.append((job, run))
    evaluations = _latest_evaluations(session, [job.id for job, _run in found])
    return [_row(session, job, run, evaluations.get(job.id)) for job, run in found]


def get_adapter(session: Session, job_id: uuid.UUID, *, user: User) -> AdapterRow:
    """A succeeded job's adapter; 404 for another user's job, one still running, or one that failed."""
    job = jobs.get_job(session, job_id, user=user)
    run = jobs.job_run(session, job)
    if run.status != RunStatus.succeeded or not job_files.final_dir(job).is_dir():
        raise NotFound(_("No such adapter: the job has not succeeded."))
    return _row(session, job, run, _latest_evaluations(session, [job.id]).get(job.id))


def all_tags(session: Session, *, user: User) -> list[str]:
    return sorted({t for job in jobs.list_jobs(session, user=user) for t in (job.tags or [])})


def set_tags(job: TrainingJob, raw: list[str] | str) -> list[str]:
    """Replace the job's tags: words of letters, digits and . _ : - (comma or space separated)."""
    items = re.split(r"[,\s]+", raw) if isinstance(raw, str) else raw
    tags = sorted({t.strip() for t in items if t and t.strip()})
    bad = [t for t in tags if not TAG_RE.match(t)]
    if bad:
        raise InvalidInput(_("Tags are 1–40 letters, digits and . _ : - (not %(tag)s).", tag=bad[0][:40]), field="tags")
    if len(tags) > MAX_TAGS:
        raise InvalidInput(_("At most %(n)s tags.", n=MAX_TAGS), field="tags")
    job.tags = tags
    return tags


def _version_chain(session: Session, version: DatasetVersion | None) -> list[DatasetVersion]:
    """The version and the versions it was made from (cleaning makes a version from a parent)."""
    chain: list[DatasetVersion] = []
    while version is not None and version not in chain and len(chain) < 50:
        chain.append(version)
        version = session.get(DatasetVersion, version.parent_version_id) if version.parent_version_id else None
    return chain


@dataclass(frozen=True)
class DatasetTrail:
    """Back from a version to the files it came from: its dataset, the versions it was made through (cleanings
    and commits), the uploads, and what validation said of them."""

    dataset: Dataset
    versions: list[DatasetVersion]
    uploads: list[Upload]
    report: dict[str, Any]  # valid_lines, invalid_lines, by_code, record_format


def _dataset_trail(session: Session, version: DatasetVersion | None) -> DatasetTrail | None:
    if version is None:
        return None
    dataset = referenced(session, Dataset, version.dataset_id)
    chain = _version_chain(session, version)
    upload_ids = {v.upload_id for v in chain if v.upload_id} | {dataset.upload_id}
    uploads = [u for u in (session.get(Upload, i) for i in upload_ids) if u is not None]
    report = dataset.report or {}
    return DatasetTrail(
        dataset=dataset,
        versions=chain,
        uploads=sorted(uploads, key=lambda u: u.created_at),
        report={
            "valid_lines": report.get("valid_lines"),
            "invalid_lines": report.get("invalid_lines", 0),
            "by_code": report.get("by_code", {}),
            "record_format": report.get("record_format"),
        },
    )


def _feedback_on(session: Session, row: AdapterRow, user: User) -> list[Feedback]:
    """Playground feedback on the adapter's answers (or its checkpoints', ``job-<id>@checkpoint-N``)."""
    name = row.name
    stmt = (
        select(Feedback)
        .where(Feedback.owner_id == user.id)
        .where(or_(Feedback.model_a.startswith(name), Feedback.model_b.startswith(name)))
    )
    return list(session.scalars(stmt))


@dataclass(frozen=True)
class PreferenceTrail:
    dataset: Dataset  # made from playground feedback on the adapter's answers
    jobs: list[TrainingJob]  # trained on it


@dataclass(frozen=True)
class Lineage:
    """Back from the adapter to the uploads, and forward to what was made from it."""

    training: DatasetTrail | None  # None for an adapter uploaded rather than trained here
    general: DatasetTrail | None
    mixed: list[tuple[DatasetTrail, float]]  # other dataset versions mixed in (TrainingSpec.mix), with ratios
    held_out: DatasetTrail | None
    reward_model: TrainingJob | None
    cloned_from: TrainingJob | None
    evaluations: list[Evaluation]
    judgements: list[Judgement]
    feedback: dict[str, int]  # count, used
    preference_datasets: list[PreferenceTrail]
    continued_by: list[TrainingJob]


def lineage(session: Session, row: AdapterRow, *, user: User) -> Lineage:
    """Back from the adapter to the upload, and forward to what was made from it."""
    job = row.job
    feedback = _feedback_on(session, row, user)
    preference_ids = {f.dataset_id for f in feedback if f.dataset_id}
    preference_sets = [d for d in (session.get(Dataset, i) for i in preference_ids) if d is not None]
    made_from_sets = []
    for dataset in preference_sets:
        version_ids = [
            v.id for v in session.scalars(select(DatasetVersion).where(DatasetVersion.dataset_id == dataset.id))
        ]
        trained = (
            list(session.scalars(select(TrainingJob).where(TrainingJob.dataset_version_id.in_(version_ids))))
            if version_ids
            else []
        )
        made_from_sets.append(PreferenceTrail(dataset, trained))
    evaluations = list(
        session.scalars(select(Evaluation).where(Evaluation.job_id == job.id).order_by(Evaluation.created_at))
    )
    judgements = (
        list(
            session.scalars(
                select(Judgement)
                .where(Judgement.evaluation_id.in_([e.id for e in evaluations]))
                .order_by(Judgement.created_at)
            )
        )
        if evaluations
        else []
    )
    reward_id = job.spec.get("reward_job_id")
    reward = None
    if reward_id:
        try:
            reward = jobs.get_job(session, uuid.UUID(reward_id), user=user)
        except (ValueError, NotFound):
            reward = None
    continued = list(session.scalars(select(TrainingJob).where(TrainingJob.cloned_from_id == job.id)))
    cloned_from = session.get(TrainingJob, job.cloned_from_id) if job.cloned_from_id else None
    general = referenced(session, DatasetVersion, job.general_version_id) if job.general_version_id else None
    held_out = referenced(session, DatasetVersion, job.validation_version_id) if job.validation_version_id else None
    mixed = []
    for part in job.spec.get("mix") or []:
        # no foreign key: datasets.deletable() keeps a mixed-in version; a missing one is left out
        trail = _dataset_trail(session, session.get(DatasetVersion, uuid.UUID(str(part["version_id"]))))
        if trail is not None:
            mixed.append((trail, float(part["ratio"])))
    return Lineage(
        training=_dataset_trail(session, row.version),
        general=_dataset_trail(session, general),
        mixed=mixed,
        held_out=_dataset_trail(session, held_out),
        reward_model=reward,
        cloned_from=cloned_from if cloned_from and cloned_from.owner_id == user.id else None,
        evaluations=evaluations,
        judgements=judgements,
        feedback={"count": len(feedback), "used": sum(1 for f in feedback if f.dataset_id)},
        preference_datasets=made_from_sets,
        continued_by=[j for j in continued if j.owner_id == user.id],
    )


MERGE_KIND = "merge"
MERGEABLE = {Adapter.lora.value, Adapter.qlora.value, Adapter.ia3.value}


def merged_dir(job: TrainingJob) -> Path:
    return artifact_path(f"{job.storage_key}/merged")


def merged_ready(job: TrainingJob) -> bool:
    return (merged_dir(job) / COMPLETE_MARKER).is_file()


def merge_run(session: Session, job: TrainingJob) -> Run | None:
    return runs.optional_run(session, job.merge_run_id)


def start_merge(session: Session, *, user: User, row: AdapterRow) -> Run:
    """Merge a LoRA (DoRA, QLoRA) or IA3 adapter into its base weights as a background run."""
    job = row.job
    if job.spec.get("adapter") not in MERGEABLE:
        raise InvalidInput(
            _(
                "Only LoRA, DoRA, QLoRA and IA3 adapters can be merged into the base weights; a %(adapter)s "
                "adapter is used as it is (full and freeze fine-tuning already are whole models).",
                adapter=job.spec.get("adapter"),
            )
        )
    running = merge_run(session, job)
    if running is not None and not running.status.is_final:
        return running
    if merged_ready(job):
        raise Conflict(_("The merged model is ready already; download it."))
    run = runs.create_run(session, kind=MERGE_KIND, owner=user, params={"job_id": str(job.id)}, queue="gpu")
    job.merge_run_id = run.id
    session.flush()
    return run


def merged_zip(session: Session, row: AdapterRow) -> Iterator[bytes]:
    if not merged_ready(row.job):
        raise Conflict(_("Merge the adapter into its base first; the download is ready when the merge has finished."))
    return job_files.directory_zip(merged_dir(row.job), model_card(session, row.job, merged=True))


@dataclass(frozen=True)
class Dependents:
    """What deleting an adapter takes with it, and what refers to it and stays."""

    evaluations: list[Evaluation]
    judgements: list[Judgement]
    merged: bool
    resumed_by: list[TrainingJob]  # jobs that continue from one of its checkpoints
    cloned_by: list[TrainingJob]  # jobs started again from its spec ("Clone with changes"): they use no file of it
    reward_for: list[TrainingJob]
    preference_datasets: list[str]  # ids of datasets made from feedback on its answers
    running: list[TrainingJob]  # of resumed_by and reward_for: these block the deletion


def dependents(session: Session, row: AdapterRow, *, user: User) -> Dependents:
    """What deleting the adapter would take with it (its evaluations and their judgements, its merged model)
    and what refers to it and stays (jobs resumed from it or scored by it as a reward model, preference
    datasets made from feedback on its answers)."""
    job = row.job
    evaluations = list(session.scalars(select(Evaluation).where(Evaluation.job_id == job.id)))
    judgements = (
        list(session.scalars(select(Judgement).where(Judgement.evaluation_id.in_([e.id for e in evaluations]))))
        if evaluations
        else []
    )
    mine = jobs.list_jobs(session, user=user)
    resumed_by = [j for j in mine if j.cloned_from_id == job.id and j.resume_checkpoint]
    cloned_by = [j for j in mine if j.cloned_from_id == job.id and not j.resume_checkpoint]
    reward_for = [j for j in mine if j.spec.get("reward_job_id") == str(job.id)]
    feedback = _feedback_on(session, row, user)
    return Dependents(
        evaluations=evaluations,
        judgements=judgements,
        merged=merged_ready(job),
        resumed_by=resumed_by,
        cloned_by=cloned_by,
        reward_for=reward_for,
        preference_datasets=sorted({str(f.dataset_id) for f in feedback if f.dataset_id}),
        running=[j for j in resumed_by + reward_for if not jobs.job_run(session, j).status.is_final],
    )


def delete_adapter(session: Session, row: AdapterRow, *, user: User) -> None:
    """Delete the job's adapter, checkpoints and merged model, its evaluations and their judgements. Jobs
    still running from it (resumed, or scored by it) must finish or be cancelled first."""
    found = dependents(session, row, user=user)
    if found.running:
        names = ", ".join(j.name for j in found.running)
        raise Conflict(_("Jobs that use this adapter are still running (%(names)s); cancel them first.", names=names))
    merge = merge_run(session, row.job)
    if merge is not None and not merge.status.is_final:
        raise Conflict(_("A merge of this adapter is running; wait for it to finish."))
    from app.adapters import exports  # it builds on this module

    if exports.live(session, row.job):
        raise Conflict(_("A GGUF export of this adapter is running; wait for it to finish."))
    keys = [e.storage_key for e in found.evaluations if e.storage_key]
    keys += [j.storage_key for j in found.judgements if j.storage_key]
    keys.append(row.job.storage_key)
    for judgement in found.judgements:
        session.delete(judgement)
    for evaluation in found.evaluations:
        session.delete(evaluation)
    session.delete(row.job)
    session.flush()
    for key in keys:
        remove_tree(key)
