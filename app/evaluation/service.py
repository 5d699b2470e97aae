"""Evaluations of trained jobs: start one (by itself after training, or again on any dataset version), read
its report and samples, compare several."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from app.core.config import get_settings
from app.core.errors import InvalidInput
from app.core.i18n import _, ngettext
from app.core.ownership import get_owned
from app.datasets.storage import artifact_path
from app.db.models import DatasetVersion, Evaluation, Judge, Run, RunStatus, TrainingJob, User
from app.jobs.spec import Method
from app.runs import service as runs

EVAL_KIND = "evaluation"
PROBE_PATH = Path(__file__).with_name("probe.jsonl")
GENERATIVE = {m.value for m in Method} - {Method.reward.value}
SORTS = ("diff", "-diff", "tuned", "base")


class EvaluationOptions(BaseModel):
    sample_size: int = Field(20, ge=1, le=2000, description="Test prompts answered by each model and scored.")
    max_new_tokens: int = Field(96, ge=1, le=4096, description="Longest generated answer, in tokens.")
    loss_records: int = Field(100, ge=1, le=10_000, description="Test records scored for loss and perplexity.")
    few_shot: int = Field(3, ge=0, le=16, description="Training examples shown to the base model (few-shot).")
    probe_size: int = Field(40, ge=0, le=40, description="General tasks scored to catch forgetting.")
    split: str = Field("test", pattern="^(test|validation)$", description="The split of the version evaluated.")
    seed: int = Field(42, ge=0, le=2**31 - 1)
    judge_id: uuid.UUID | None = Field(None, description="A judge that grades the answers once they are written.")
    grader_ids: list[uuid.UUID] = Field(
        default_factory=list,
        max_length=8,
        description="Your saved graders (/api/v1/graders) that grade every answer; the verdict then counts passes.",
    )


def evaluable_kinds(version: DatasetVersion, kinds: set[str] | None = None) -> int:
    """Records an evaluation can answer and score: conversations and preference pairs (reference answers), and
    with graders reinforcement prompts too."""
    kinds = kinds or {"chat", "preference"}
    return sum(n for kind, n in version.kind_counts.items() if kind in kinds)


def create_evaluation(
    session: Session,
    *,
    user: User,
    job: TrainingJob,
    version: DatasetVersion,
    options: EvaluationOptions,
    trained: bool = False,
) -> Evaluation:
    """``trained``: called as the training run succeeds (its status is written right after)."""
    run = session.get(Run, job.run_id) if job.run_id else None
    if not trained and (run is None or run.status != RunStatus.succeeded):
        raise InvalidInput(_("A job can be evaluated once it has succeeded."))
    if job.spec.get("method") not in GENERATIVE:
        raise InvalidInput(_("A reward model scores answers instead of writing them; evaluate a generating job."))
    if options.judge_id is not None and session.get(Judge, options.judge_id) is None:
        raise InvalidInput(_("No such judge; pick one of the list."), field="judge_id")
    from app.graders import library  # (it checks model graders against the judges, which read evaluations)

    # copied: editing or deleting a saved grader later leaves this evaluation's report as it was graded
    graders = library.attached(session, options.grader_ids, user=user)
    if job.spec.get("grader") and not graders:  # a reinforcement job is judged by its own reward grader
        graders = [job.spec["grader"]]
    kinds = {"chat", "preference", "prompt"} if graders else {"chat", "preference"}
    if not version.split_counts.get(options.split) or not evaluable_kinds(version, kinds):
        raise InvalidInput(
            _(
                "This dataset version has no chat or preference records in its %(split)s split; pick another "
                "version or change its split ratios.",
                split=options.split,
            ),
            field="dataset_version_id",
        )
    evaluation = Evaluation(
        owner_id=user.id,
        job_id=job.id,
        dataset_version_id=version.id,
        options=options.model_dump(mode="json") | {"graders": graders},
        storage_key="",
    )
    session.add(evaluation)
    session.flush()
    evaluation.storage_key = f"evaluations/{evaluation.id.hex}"
    evaluation.run_id = runs.create_run(
        session, kind=EVAL_KIND, owner=user, params={"evaluation_id": str(evaluation.id)}, queue="gpu"
    ).id
    session.flush()
    return evaluation


def evaluate_after_training(session: Session, job: TrainingJob) -> Evaluation | None:
    """The evaluation that runs by itself when a job succeeds, on its own version's test split (when it has
    one and the method writes answers)."""
    version = session.get(DatasetVersion, job.dataset_version_id) if job.dataset_version_id else None
    user = session.get(User, job.owner_id)
    if version is None or user is None or job.spec.get("method") not in GENERATIVE:
        return None
    kinds = {"chat", "preference", "prompt"} if job.spec.get("grader") else None
    if not version.split_counts.get("test") or not evaluable_kinds(version, kinds):
        return None
    return create_evaluation(session, user=user, job=job, version=version, options=configured({}), trained=True)


def configured(values: dict[str, Any]) -> EvaluationOptions:
    """The options given, the rest from the server's evaluation settings (REFINERY_EVAL_*): the evaluation
    after training, "Evaluate" on a job's page and the API's all start from what the administrator set."""
    settings = get_settings()
    defaults = {
        "sample_size": settings.eval_sample_size,
        "max_new_tokens": settings.eval_max_new_tokens,
        "loss_records": settings.eval_loss_records,
        "probe_size": settings.eval_probe_size,
    }
    return EvaluationOptions.model_validate({**defaults, **values})


def get_evaluation(session: Session, evaluation_id: uuid.UUID, *, user: User) -> Evaluation:
    return get_owned(session, Evaluation, evaluation_id, user=user, message=_("No such evaluation."))


def for_job(session: Session, job: TrainingJob) -> list[tuple[Evaluation, Run | None]]:
    """The job's evaluations, newest first, each with its run (for its status and progress)."""
    stmt = (
        select(Evaluation, Run)
        .outerjoin(Run, Run.id == Evaluation.run_id)
        .where(Evaluation.job_id == job.id)
        .order_by(Evaluation.created_at.desc())
    )
    return [(e, r) for e, r in session.execute(stmt).tuples()]


# what the list shows beside each evaluation: its run, job and dataset version (one query each)
LIST_LOADS = (
    selectinload(Evaluation.run),
    selectinload(Evaluation.job),
    selectinload(Evaluation.dataset_version).selectinload(DatasetVersion.dataset),
)


def list_evaluations(session: Session, *, user: User) -> list[Evaluation]:
    stmt = select(Evaluation).where(Evaluation.owner_id == user.id).order_by(Evaluation.created_at.desc())
    return list(session.scalars(stmt.options(*LIST_LOADS)))


def evaluation_run(session: Session, evaluation: Evaluation) -> Run:
    return runs.required_run(session, evaluation.run_id)


def _quality(answer: dict[str, Any]) -> float:
    """What ranks an answer: the mean of its grades when graders graded it, else its ROUGE-L."""
    grades = answer.get("grades")
    if grades:
        return sum(float(g.get("score", 0.0)) for g in grades) / len(grades)
    return float(answer.get("rouge_l") or 0.0)


def samples(evaluation: Evaluation, *, sort: str = "diff") -> list[dict[str, Any]]:
    """Per-sample outputs with their scores; ``diff`` is tuned minus base (their graders' mean score, else
    ROUGE-L; best first), ``-diff`` the worst first, ``tuned``/``base`` by that model's own."""
    path = artifact_path(f"{evaluation.storage_key}/samples.jsonl")
    if not path.is_file():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    for row in rows:
        row["diff"] = _quality(row.get("tuned", {})) - _quality(row.get("base", {}))
    keys = {
        "diff": lambda r: -r["diff"],
        "-diff": lambda r: r["diff"],
        "tuned": lambda r: -_quality(r.get("tuned", {})),
        "base": lambda r: -_quality(r.get("base", {})),
    }
    return sorted(rows, key=keys.get(sort, keys["diff"]))


# Below this many answered prompts one answer moves a score by 5 points or more: the report shows the numbers
# but draws no verdict from them.
MIN_VERDICT_SAMPLES = 20


def _too_few(answered: int) -> str:
    return ngettext(
        "Only %(num)s test prompt was answered: too few to say whether fine-tuning helped (one answer moves "
        "every score). Evaluate on at least %(min)s prompts: a larger test split, or a larger sample size.",
        "Only %(num)s test prompts were answered: too few to say whether fine-tuning helped (one answer moves "
        "every score). Evaluate on at least %(min)s prompts: a larger test split, or a larger sample size.",
        answered,
        min=MIN_VERDICT_SAMPLES,
    )


def verdict(summary: dict[str, Any]) -> str:
    """One sentence answering "was fine-tuning worth it?": with graders, how many answers of each model passed
    them; else from the ROUGE-L of the three variants; and saying when too few prompts were answered to tell."""
    answered = int(summary.get("sample_size") or 0)
    if summary.get("graders"):
        return grader_verdict(summary["graders"], too_few=answered < MIN_VERDICT_SAMPLES)
    if answered < MIN_VERDICT_SAMPLES:
        return _too_few(answered)
    scores = summary.get("scores", {})
    tuned = (scores.get("tuned") or {}).get("rouge_l")
    base = (scores.get("base") or {}).get("rouge_l")
    few = (scores.get("few_shot") or {}).get("rouge_l")
    if tuned is None or base is None:
        return ""
    best_other = max(x for x in (base, few) if x is not None)
    if tuned > best_other + 0.02:
        return _("The tuned model beats both the base model and few-shot prompting on this test set.")
    if few is not None and few >= tuned - 0.02 and few > base + 0.02:
        return _("Few-shot prompting of the base model does about as well as fine-tuning here.")
    return _("Fine-tuning did not clearly improve on the base model on this test set.")


def grader_verdict(graded: dict[str, Any], *, too_few: bool = False) -> str:
    """With graders attached the verdict counts the answers that passed them all, per model ("the tuned model
    passes 38/40, the base model 3/40, the base model shown examples 11/40"), then says which did best: a
    margin of one answer in ten, so that one lucky answer decides nothing."""
    variants = graded.get("variants") or {}
    tuned, base, few = (variants.get(v) for v in ("tuned", "base", "few_shot"))
    if not tuned or not base or not tuned.get("total"):
        return ""
    counts = {name: f"{v['passed']}/{v['total']}" for name, v in (("tuned", tuned), ("base", base), ("few", few)) if v}
    if few:
        line = _(
            "Graded by %(graders)s: the tuned model passes %(tuned)s, the base model %(base)s, the base model "
            "shown examples (few-shot) %(few)s.",
            graders=", ".join(graded.get("names") or []),
            **counts,
        )
    else:
        line = _(
            "Graded by %(graders)s: the tuned model passes %(tuned)s, the base model %(base)s.",
            graders=", ".join(graded.get("names") or []),
            **counts,
        )
    if too_few:
        return line + " " + _too_few(int(tuned["total"]))
    share = {
        name: v["passed"] / max(1, v["total"]) for name, v in (("tuned", tuned), ("base", base), ("few", few)) if v
    }
    best_other = max(share["base"], share.get("few", 0.0))
    if share["tuned"] >= best_other + 0.1:
        return line + " " + _("Fine-tuning clearly helped on this task.")
    if "few" in share and share["few"] >= share["tuned"] - 0.1 and share["few"] >= share["base"] + 0.1:
        return line + " " + _("Few-shot prompting of the base model does about as well as fine-tuning here.")
    return line + " " + _("Fine-tuning did not clearly improve on the base model on this task.")
