"""Deployments: a stable model name (``support-bot``) that /v1/chat/completions and the playground serve,
pointing at one adapter or base model.

**Promote** runs the deployment's gate for a candidate adapter: an evaluation of the candidate on the gate's
dataset version (and, when the deployment points at an adapter, the same evaluation of that adapter) with the
gate's metric — a score of the report, or the pass rate of the gate's graders — and the forgetting probe. The
deployment switches only if the candidate is no worse than what it serves now, within the margins; otherwise the
promotion fails and says which numbers failed. An administrator may promote without the gate, with a reason that
is recorded. **Roll back** returns at once to any adapter the deployment pointed at before. A request resolves
the name when it starts, so requests in flight during a switch finish on the adapter they started with."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.core.errors import Conflict, Forbidden, InvalidInput, NotFound
from app.core.i18n import _
from app.core.ownership import get_owned
from app.db.models import Deployment, DeploymentEvent, Evaluation, Promotion, Role, RunStatus, TrainingJob, User
from app.evaluation import service as evaluations
from app.jobs import service as jobs

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,59}$")
RESERVED = ("base-", "job-", "ft:")
METRICS = ("rouge_l", "f1", "bleu", "exact_match", "graders")


def _target_job(session: Session, user: User, target: str) -> TrainingJob | None:
    """The job behind a ``job-<uuid>`` target (an adapter the user may serve), None for a base model."""
    if target.startswith("base-"):
        return None
    return jobs.get_job(session, uuid.UUID(target.removeprefix("job-")), user=user)


def check_target(session: Session, user: User, model: str) -> str:
    """A model the deployment may point at, as /v1 names it (any id it accepts), in its ``base-``/``job-`` form;
    checkpoints are not deployed."""
    from app.openai_api.models import find  # /v1's catalogue names every model a user may chat with

    entry = find(session, user, model)
    if "@" in entry.target:
        raise InvalidInput(_("Deploy an adapter or a base model, not a checkpoint."), field="model")
    return entry.target


def check_gate(session: Session, user: User, gate: dict[str, Any]) -> dict[str, Any]:
    _dataset, version = jobs.owned_version(session, uuid.UUID(str(gate["dataset_version_id"])), user=user)
    metric = str(gate.get("metric", "rouge_l"))
    if metric not in METRICS:
        raise InvalidInput(_("The gate's metric is one of %(names)s.", names=", ".join(METRICS)), field="gate.metric")
    grader_ids = [str(g) for g in gate.get("grader_ids") or []]
    if metric == "graders" and not grader_ids:
        raise InvalidInput(_("A gate on the graders' pass rate needs at least one grader."), field="gate.grader_ids")
    return {
        "dataset_version_id": str(version.id),
        "metric": metric,
        "margin": float(gate.get("margin", 0.0)),
        "probe_margin": float(gate.get("probe_margin", 0.05)),
        "sample_size": int(gate.get("sample_size", 20)),
        "grader_ids": grader_ids,
    }


def _event(
    session: Session,
    deployment: Deployment,
    actor: User | None,
    action: str,
    previous: str | None,
    numbers: dict[str, Any] | None = None,
    reason: str | None = None,
) -> None:
    session.add(
        DeploymentEvent(
            deployment_id=deployment.id,
            actor_id=actor.id if actor else None,
            action=action,
            target=deployment.target,
            previous=previous,
            numbers=numbers,
            reason=reason,
        )
    )


def create(session: Session, *, user: User, name: str, model: str, gate: dict[str, Any]) -> Deployment:
    name = name.strip().lower()
    if not NAME_RE.match(name) or name.startswith(RESERVED):
        raise InvalidInput(
            _(
                _(
                    "A deployment's name is 1–60 lower-case letters, digits and . _ - (not starting with base-, job- "
                    "or ft:)."
                ),
            ),
            field="name",
        )
    if session.scalar(select(Deployment).where(Deployment.owner_id == user.id, Deployment.name == name)):
        raise Conflict(_("You have a deployment named %(name)s already.", name=name), field="name")
    from app.openai_api.models import find

    try:
        find(session, user, name)
    except NotFound:
        pass
    else:
        raise Conflict(_("%(name)s names a model already; choose another name.", name=name), field="name")
    deployment = Deployment(owner_id=user.id, name=name, target=check_target(session, user, model), gate={})
    deployment.gate = check_gate(session, user, gate)
    session.add(deployment)
    session.flush()
    _event(session, deployment, user, "created", None)
    session.flush()
    return deployment


def get(session: Session, deployment_id: uuid.UUID, *, user: User) -> Deployment:
    return get_owned(session, Deployment, deployment_id, user=user, message=_("No such deployment."))


def list_for(session: Session, *, user: User) -> list[Deployment]:
    stmt = select(Deployment).where(Deployment.owner_id == user.id).order_by(Deployment.name)
    return list(session.scalars(stmt))


def by_name(session: Session, user: User, name: str) -> Deployment | None:
    return session.scalar(select(Deployment).where(Deployment.owner_id == user.id, Deployment.name == name))


def history(session: Session, deployment: Deployment) -> list[DeploymentEvent]:
    stmt = (
        select(DeploymentEvent)
        .where(DeploymentEvent.deployment_id == deployment.id)
        .order_by(DeploymentEvent.created_at.desc(), DeploymentEvent.id)
    )
    return list(session.scalars(stmt))


def promotions(session: Session, deployment: Deployment) -> list[Promotion]:
    stmt = select(Promotion).where(Promotion.deployment_id == deployment.id).order_by(Promotion.created_at.desc())
    return list(session.scalars(stmt))


def _gate_evaluation(session: Session, user: User, job: TrainingJob, gate: dict[str, Any]) -> Evaluation:
    _dataset, version = jobs.owned_version(session, uuid.UUID(gate["dataset_version_id"]), user=user)
    # the gate's own numbers; the rest (answer length, loss records, probes) as the server's evaluations are set
    options = evaluations.configured(
        {
            "sample_size": gate["sample_size"],
            "grader_ids": [uuid.UUID(g) for g in gate["grader_ids"]],
            "few_shot": 0,  # the gate compares two models; the few-shot baseline is not part of it
        }
    )
    return evaluations.create_evaluation(session, user=user, job=job, version=version, options=options)


def promote(
    session: Session, *, user: User, deployment: Deployment, model: str, override_reason: str = ""
) -> Promotion | None:
    """Run the gate for a candidate (None when an administrator overrode the gate: switched at once)."""
    candidate = check_target(session, user, model)
    if candidate == deployment.target:
        raise Conflict(_("The deployment serves that model already."), field="model")
    if override_reason.strip():
        if user.role != Role.admin:
            raise Forbidden(_("Only an administrator may promote without the gate."))
        previous, deployment.target = deployment.target, candidate
        _event(session, deployment, user, "overridden", previous, reason=override_reason.strip()[:2000])
        session.flush()
        return None
    job = _target_job(session, user, candidate)
    if job is None:
        raise InvalidInput(_("The gate evaluates an adapter; a base model is deployed by rolling back to it."))
    if any(p.status == "running" for p in promotions(session, deployment)):
        raise Conflict(_("A promotion of this deployment is waiting for its gate; let it finish first."))
    promotion = Promotion(
        deployment_id=deployment.id, actor_id=user.id, candidate=candidate, baseline=deployment.target
    )
    promotion.candidate_evaluation_id = _gate_evaluation(session, user, job, deployment.gate).id
    baseline_job = _target_job(session, user, deployment.target)
    if baseline_job is not None:
        promotion.baseline_evaluation_id = _gate_evaluation(session, user, baseline_job, deployment.gate).id
    session.add(promotion)
    session.flush()
    return promotion


def _score(summary: dict[str, Any], variant: str, metric: str) -> float | None:
    if metric == "graders":
        graded = ((summary.get("graders") or {}).get("variants") or {}).get(variant) or {}
        return graded["passed"] / graded["total"] if graded.get("total") else None
    value = ((summary.get("scores") or {}).get(variant) or {}).get(metric)
    return float(value) if isinstance(value, int | float) else None


def _probe(summary: dict[str, Any], variant: str) -> float | None:
    value = ((summary.get("probe") or {}).get("loss") or {}).get(variant)
    return float(value) if isinstance(value, int | float) else None


def judge(gate: dict[str, Any], candidate: dict[str, Any], baseline: dict[str, Any], variant: str) -> dict[str, Any]:
    """The gate's numbers and its decision: the candidate's metric (higher is better) no more than ``margin``
    below the baseline's, and its probe loss (forgetting; lower is better) no more than ``probe_margin`` above."""
    metric = gate["metric"]
    numbers: dict[str, Any] = {
        "metric": metric,
        "candidate": _score(candidate, "tuned", metric),
        "baseline": _score(baseline, variant, metric),
        "margin": gate["margin"],
        "probe_candidate": _probe(candidate, "tuned"),
        "probe_baseline": _probe(baseline, variant),
        "probe_margin": gate["probe_margin"],
    }
    failed = []
    mine, theirs = numbers["candidate"], numbers["baseline"]
    if mine is None or theirs is None or mine < theirs - gate["margin"]:
        failed.append(metric)
    probe_mine, probe_theirs = numbers["probe_candidate"], numbers["probe_baseline"]
    if probe_mine is not None and probe_theirs is not None and probe_mine > probe_theirs + gate["probe_margin"]:
        failed.append("forgetting")
    numbers["failed"] = failed
    numbers["passed"] = not failed
    return numbers


def settle(session: Session, evaluation: Evaluation) -> None:
    """After an evaluation ends: every promotion it was the last awaited evaluation of is decided."""
    stmt = select(Promotion).where(
        Promotion.status == "running",
        (Promotion.candidate_evaluation_id == evaluation.id) | (Promotion.baseline_evaluation_id == evaluation.id),
    )
    for promotion in session.scalars(stmt):
        _decide(session, promotion, succeeded=evaluation)


def _finished(
    session: Session, evaluation_id: uuid.UUID | None, succeeded: Evaluation | None = None
) -> tuple[bool, dict[str, Any] | None]:
    """(over, summary): over when it succeeded, failed or was deleted; the summary when it succeeded.
    ``succeeded`` is the evaluation whose success is being recorded (its run is marked right after)."""
    if evaluation_id is None:
        return True, None
    if succeeded is not None and succeeded.id == evaluation_id:
        return True, succeeded.summary
    evaluation = session.get(Evaluation, evaluation_id)
    if evaluation is None:
        return True, None
    run = evaluations.evaluation_run(session, evaluation)
    if not run.status.is_final:
        return False, None
    return True, evaluation.summary if run.status == RunStatus.succeeded else None


def _decide(session: Session, promotion: Promotion, succeeded: Evaluation | None = None) -> None:
    over, candidate = _finished(session, promotion.candidate_evaluation_id, succeeded)
    base_over, baseline = (
        _finished(session, promotion.baseline_evaluation_id, succeeded)
        if promotion.baseline_evaluation_id
        else (True, candidate)
    )
    if not (over and base_over):
        return
    deployment = session.get(Deployment, promotion.deployment_id)
    if deployment is None:
        return
    promotion.finished_at = datetime.now(UTC)
    actor = session.get(User, promotion.actor_id) if promotion.actor_id else None
    if candidate is None or baseline is None:
        promotion.status = "error"
        promotion.reason = _("The gate's evaluation did not finish; promote again.")
        return
    variant = "base" if promotion.baseline_evaluation_id is None else "tuned"
    numbers = judge(deployment.gate, candidate, baseline, variant)
    promotion.numbers = numbers
    if deployment.target != promotion.baseline:
        promotion.status = "error"
        promotion.reason = _("The deployment was moved while the gate ran; promote again.")
        return
    if numbers["passed"]:
        promotion.status = "passed"
        previous, deployment.target = deployment.target, promotion.candidate
        _event(session, deployment, actor, "promoted", previous, numbers)
    else:
        promotion.status = "failed"
        promotion.reason = gate_failure(numbers)
        _event(session, deployment, actor, "refused", deployment.target, numbers, promotion.reason)
    session.flush()


def gate_failure(numbers: dict[str, Any]) -> str:
    parts = []
    for name in numbers["failed"]:
        if name == "forgetting":
            parts.append(
                _(
                    "forgetting: probe loss %(candidate)s against %(baseline)s (allowed up to +%(margin)s)",
                    candidate=_fmt(numbers["probe_candidate"]),
                    baseline=_fmt(numbers["probe_baseline"]),
                    margin=numbers["probe_margin"],
                )
            )
        else:
            parts.append(
                _(
                    "%(metric)s: %(candidate)s against %(baseline)s now served (allowed down to -%(margin)s)",
                    metric=name,
                    candidate=_fmt(numbers["candidate"]),
                    baseline=_fmt(numbers["baseline"]),
                    margin=numbers["margin"],
                )
            )
    return _("The gate refused the candidate: %(parts)s.", parts="; ".join(parts))


def _fmt(value: float | None) -> str:
    return "—" if value is None else f"{value:.3f}"


def rollback(session: Session, *, user: User, deployment: Deployment, model: str) -> None:
    """Point back at an adapter or base model the deployment served before, at once."""
    target = check_target(session, user, model)
    served = {e.target for e in history(session, deployment)} | {e.previous for e in history(session, deployment)}
    if target not in served or target == deployment.target:
        raise InvalidInput(_("Roll back to a model this deployment served before."), field="model")
    previous, deployment.target = deployment.target, target
    _event(session, deployment, user, "rolled_back", previous)
    session.flush()


def delete(session: Session, deployment: Deployment) -> None:
    session.delete(deployment)
    session.flush()


def serving(session: Session, user: User, target: str) -> list[tuple[Deployment, bool]]:
    """The user's deployments that serve a model now (True) or served it before (False), for its lineage."""
    found = []
    for deployment in list_for(session, user=user):
        if deployment.target == target:
            found.append((deployment, True))
        elif any(target in (e.target, e.previous) for e in history(session, deployment)):
            found.append((deployment, False))
    return found


def settle_stalled(session: Session) -> int:
    """Decide the promotions whose evaluations ended without succeeding (a failed or cancelled evaluation has no
    success hook to settle them); the reconciler calls it, so that no page view changes anything."""
    running = list(session.scalars(select(Promotion).where(Promotion.status == "running")))
    for promotion in running:
        _decide(session, promotion)
    return sum(1 for p in running if p.status != "running")


def labels(session: Session, user: User) -> dict[str, str]:
    """The names people know each target by (the adapter's job name, the base model's name), read once."""
    from app.openai_api.models import catalogue

    return {e.target: e.label for e in catalogue(session, user) if not e.deployment}
