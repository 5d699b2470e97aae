"""Background runs: create, claim with a lease, heartbeat, finish, cancel, reconcile.

Every transition is one conditional UPDATE, so two workers (or a worker and the reconciler) can never
both win: a second delivery of the same message finds the run already claimed and does nothing.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import CursorResult, event, func, literal, or_, select, update
from sqlalchemy.orm import Session, aliased

from app.core.config import get_settings
from app.core.errors import Conflict, NotFound
from app.core.i18n import _
from app.core.ownership import get_owned
from app.core.queue import send_run
from app.db.base import utcnow
from app.db.models import Run, RunEvent, RunStatus, User
from app.runs.messages import english

_PENDING_KEY = "refinery_enqueue_after_commit"

# Domains register what must happen to their objects when a run of their kind ends badly
# (e.g. a model import that failed marks the model failed), however the run ended.
FailureHook = Callable[[Session, uuid.UUID, str], None]
_failure_hooks: dict[str, FailureHook] = {}


def on_run_failure(kind: str, hook: FailureHook) -> None:
    _failure_hooks[kind] = hook


def _notify_failure(session: Session, run_id: uuid.UUID, message: str) -> None:
    kind = session.scalar(select(Run.kind).where(Run.id == run_id))
    if kind in _failure_hooks:
        _failure_hooks[kind](session, run_id, message)


@event.listens_for(Session, "after_commit")
def _send_pending(session: Session) -> None:
    for run_id, queue in session.info.pop(_PENDING_KEY, []):
        send_run(run_id, queue)


@event.listens_for(Session, "after_rollback")
def _drop_pending(session: Session) -> None:
    session.info.pop(_PENDING_KEY, None)


def enqueue_after_commit(session: Session, run: Run) -> None:
    run.enqueued_at = utcnow()
    session.info.setdefault(_PENDING_KEY, []).append((str(run.id), run.queue))


def add_event(
    session: Session,
    run_id: uuid.UUID,
    code: str,
    params: dict[str, Any] | None = None,
    *,
    level: str = "info",
    attempt: int = 0,
) -> None:
    """An event is a text code with parameters (app/runs/messages.py), plus its English rendering."""
    seq = session.scalar(select(func.coalesce(func.max(RunEvent.seq), 0)).where(RunEvent.run_id == run_id)) or 0
    session.add(
        RunEvent(
            run_id=run_id,
            seq=seq + 1,
            message=english(code, params),
            code=code,
            params=params or {},
            level=level,
            attempt=attempt,
        )
    )


def create_run(session: Session, *, kind: str, owner: User | None, params: dict[str, Any], queue: str = "cpu") -> Run:
    run = Run(
        kind=kind,
        owner_id=owner.id if owner else None,
        params=params,
        queue=queue,
        max_attempts=get_settings().max_attempts,
        status=RunStatus.queued,
    )
    session.add(run)
    session.flush()
    add_event(session, run.id, "queued")
    enqueue_after_commit(session, run)
    return run


def required_run(session: Session, run_id: uuid.UUID | None) -> Run:
    """The run behind a training job, an evaluation or a cleaning: created with it and never deleted, so a
    missing one is answered like a missing object. The identity map answers when a list preloaded it."""
    run = session.get(Run, run_id) if run_id else None
    if run is None:
        raise NotFound(_("No such run."))
    return run


def optional_run(session: Session, run_id: uuid.UUID | None) -> Run | None:
    """A run that may not exist yet: a dataset's validation, a model's import, a commit, a merge."""
    return session.get(Run, run_id) if run_id else None


def get_run(session: Session, run_id: uuid.UUID, *, user: User | None = None) -> Run:
    if user is None:  # the worker's own access
        run = session.get(Run, run_id)
        if run is None:
            raise NotFound(_("No such run."))
        return run
    return get_owned(session, Run, run_id, user=user, message=_("No such run."), shared_ok=True)


def get_run_as(session: Session, run_id: uuid.UUID, *, user: User) -> Run:
    """A run its owner may see; an administrator may see (and cancel) anyone's."""
    return get_run(session, run_id, user=None if user.is_admin else user)


@dataclass(frozen=True)
class ActiveRun:
    run: Run
    owner_email: str | None


def active_runs(session: Session, *, user: User) -> list[ActiveRun]:
    """Queued and running runs, oldest first: the user's own, or everyone's for an administrator."""
    stmt = (
        select(Run, User.email)
        .outerjoin(User, User.id == Run.owner_id)
        .where(Run.status.in_([RunStatus.queued, RunStatus.running]))
        .order_by(Run.created_at)
        .limit(500)
    )
    if not user.is_admin:
        stmt = stmt.where(Run.owner_id == user.id)
    return [ActiveRun(run, email) for run, email in session.execute(stmt).all()]


def list_events(session: Session, run_id: uuid.UUID, *, after: int = 0) -> list[RunEvent]:
    stmt = select(RunEvent).where(RunEvent.run_id == run_id, RunEvent.seq > after).order_by(RunEvent.seq)
    return list(session.scalars(stmt))


@dataclass(frozen=True)
class Lease:
    run_id: uuid.UUID
    owner: str
    attempt: int


def _rowcount(result: Any) -> int:
    assert isinstance(result, CursorResult)
    return int(result.rowcount)


DEFER_SECONDS = 2.0


def _yields_to_another_user(session: Session, run_id: uuid.UUID) -> bool:
    """Fair turns between users on a queue: a run yields its worker slot when another user has work queued
    there and was last served earlier than this run's owner (or never), so one user's burst of runs cannot
    hold every slot while someone else waits. Runs without an owner (the system's) never yield."""
    row = session.execute(select(Run.owner_id, Run.queue).where(Run.id == run_id)).first()
    if row is None or row.owner_id is None:
        return False
    mine = session.scalar(
        select(func.max(Run.started_at)).where(
            Run.owner_id == row.owner_id, Run.queue == row.queue, Run.started_at.is_not(None)
        )
    )
    if mine is None:
        return False
    other = aliased(Run)
    served = (
        select(func.max(other.started_at))
        .where(other.owner_id == Run.owner_id, other.queue == row.queue, other.started_at.is_not(None))
        .scalar_subquery()
    )
    waiting = select(Run.id).where(
        Run.status == RunStatus.queued,
        Run.queue == row.queue,
        Run.owner_id.is_not(None),
        Run.owner_id != row.owner_id,
        Run.cancel_requested.is_(False),
        or_(served.is_(None), served < mine),
    )
    return session.scalar(waiting.limit(1)) is not None


def claim(session: Session, run_id: uuid.UUID, owner: str) -> Lease | None:
    """Take the lease of a queued run; None when someone else has it, it is finished, or it yields its turn
    to another user's waiting run (then it stays queued and the reconciler sends it again shortly)."""
    now = utcnow()
    if _yields_to_another_user(session, run_id):
        settings = get_settings()
        again = now - timedelta(seconds=max(0.0, settings.requeue_after_seconds - DEFER_SECONDS))
        session.execute(
            update(Run)
            .where(Run.id == run_id, Run.status == RunStatus.queued)
            .values(enqueued_at=again)
            .execution_options(synchronize_session=False)
        )
        return None
    result = session.execute(
        update(Run)
        .where(Run.id == run_id, Run.status == RunStatus.queued, Run.cancel_requested.is_(False))
        .values(
            status=RunStatus.running,
            attempt=Run.attempt + 1,
            lease_owner=owner,
            heartbeat_at=now,
            started_at=func.coalesce(Run.started_at, now),
        )
        .execution_options(synchronize_session=False)
    )
    if _rowcount(result) != 1:
        return None
    attempt = session.scalar(select(Run.attempt).where(Run.id == run_id)) or 1
    add_event(session, run_id, "started", {"attempt": attempt, "worker": owner}, attempt=attempt)
    return Lease(run_id=run_id, owner=owner, attempt=attempt)


def _held(lease: Lease) -> Any:
    return (
        (Run.id == lease.run_id)
        & (Run.lease_owner == lease.owner)
        & (Run.attempt == lease.attempt)
        & (Run.status == RunStatus.running)
    )


def heartbeat(
    session: Session,
    lease: Lease,
    *,
    progress: float | None = None,
    note: dict[str, Any] | None = None,
    eta_seconds: float | None = None,
) -> tuple[bool, str | None]:
    """Renew the lease, recording progress and its text (``{"code", "params"}``). Returns (held, what the
    owner asked for: "cancel", "pause" or None)."""
    values: dict[str, Any] = {"heartbeat_at": utcnow()}
    if progress is not None:
        values["progress"] = max(0.0, min(1.0, progress))
        values["eta_seconds"] = eta_seconds
    if note is not None:
        values["progress_message"] = english(note["code"], note.get("params"))[:500]
        values["progress_code"] = note["code"]
        values["progress_params"] = note.get("params") or {}
    result = session.execute(
        update(Run).where(_held(lease)).values(**values).execution_options(synchronize_session=False)
    )
    if _rowcount(result) != 1:
        return False, None
    asked = session.execute(select(Run.cancel_requested, Run.pause_requested).where(Run.id == lease.run_id)).one()
    return True, "cancel" if asked.cancel_requested else "pause" if asked.pause_requested else None


def finish(
    session: Session,
    lease: Lease,
    status: RunStatus,
    *,
    result: dict[str, Any] | None = None,
    error_kind: str | None = None,
    error: dict[str, Any] | None = None,
) -> bool:
    """``error`` is the failure's text (``{"code", "params"}``) saying what to change."""
    values: dict[str, Any] = {
        "status": status,
        "finished_at": utcnow(),
        "lease_owner": None,
        "result": result,
        "error_kind": error_kind,
        "error_message": english(error["code"], error.get("params")) if error else None,
        "error_code": error["code"] if error else None,
        "error_params": (error.get("params") or {}) if error else None,
    }
    if status == RunStatus.succeeded:
        values |= {"progress": 1.0, "eta_seconds": 0.0}
    done = (
        _rowcount(
            session.execute(
                update(Run).where(_held(lease)).values(**values).execution_options(synchronize_session=False)
            )
        )
        == 1
    )
    if done:
        if status == RunStatus.failed:
            add_event(
                session,
                lease.run_id,
                "failed",
                {"kind": error_kind, "reason": error or {"code": "failed"}},
                level="error",
                attempt=lease.attempt,
            )
        else:
            add_event(
                session,
                lease.run_id,
                "succeeded" if status == RunStatus.succeeded else "cancelled",
                attempt=lease.attempt,
            )
        if status != RunStatus.succeeded:
            _notify_failure(session, lease.run_id, values["error_message"] or english("cancelled"))
    return done


def release_for_retry(
    session: Session,
    lease: Lease,
    reason: dict[str, Any],
    *,
    stale_before: datetime | None = None,
    count_attempt: bool = True,
) -> RunStatus:
    """The attempt died without a verdict: queue it again, or fail it when attempts are used up.

    With ``stale_before`` (the reconciler) nothing happens if the holder heartbeated in the meantime.
    """
    held = _held(lease)
    if stale_before is not None:
        held = held & (Run.heartbeat_at < stale_before)
        if session.scalar(select(func.count()).select_from(Run).where(held)) != 1:
            return RunStatus.running
    run = session.get(Run, lease.run_id)
    if run is None:
        return RunStatus.failed
    if run.cancel_requested:
        finish(session, lease, RunStatus.cancelled)
        return RunStatus.cancelled
    if count_attempt and lease.attempt >= run.max_attempts:
        finish(
            session,
            lease,
            RunStatus.failed,
            error_kind="internal",
            error={"code": "gave_up", "params": {"reason": reason, "attempts": lease.attempt}},
        )
        return RunStatus.failed
    # A graceful stop of the worker is not the job's fault: it does not use up an attempt.
    next_attempt = lease.attempt
    values: dict[str, Any] = {"status": RunStatus.queued, "lease_owner": None, "heartbeat_at": None}
    if not count_attempt:
        values["attempt"] = lease.attempt - 1
        next_attempt = lease.attempt - 1
    result = session.execute(update(Run).where(held).values(**values).execution_options(synchronize_session=False))
    if _rowcount(result) == 1:
        session.refresh(run)
        add_event(
            session,
            run.id,
            "requeued",
            {"reason": reason, "attempt": next_attempt + 1},
            level="warning",
            attempt=lease.attempt,
        )
        enqueue_after_commit(session, run)
    return RunStatus.queued


def request_cancel(session: Session, run: Run) -> Run:
    if run.status.is_final:
        raise Conflict(_("This run has already finished; there is nothing to cancel."))
    run.cancel_requested = True
    if run.status in (RunStatus.queued, RunStatus.paused):
        run.status = RunStatus.cancelled
        run.finished_at = utcnow()
        add_event(session, run.id, "cancelled_before_start")
        _notify_failure(session, run.id, "Cancelled.")
    else:
        add_event(session, run.id, "cancel_requested")
    session.flush()
    return run


def request_pause(session: Session, run: Run) -> Run:
    """A queued run is paused at once; a running one when its worker has stopped the child at a checkpoint
    (the worker sees the request with its next heartbeat)."""
    if run.status.is_final:
        raise Conflict(_("This run has already finished; there is nothing to pause."))
    if run.status == RunStatus.paused or run.pause_requested:
        return run
    if run.status == RunStatus.queued:
        run.status = RunStatus.paused
        add_event(session, run.id, "paused")
    else:
        run.pause_requested = True
        add_event(session, run.id, "pause_requested")
    session.flush()
    return run


def pause(session: Session, lease: Lease) -> bool:
    """The worker stopped the child at a checkpoint: the run waits, holding no worker, until resumed. The
    attempt is not counted (a pause is not a failure)."""
    values = {
        "status": RunStatus.paused,
        "lease_owner": None,
        "heartbeat_at": None,
        "pause_requested": False,
        "attempt": lease.attempt - 1,
    }
    result = session.execute(
        update(Run).where(_held(lease)).values(**values).execution_options(synchronize_session=False)
    )
    if _rowcount(result) != 1:
        return False
    add_event(session, lease.run_id, "paused", attempt=lease.attempt)
    return True


def resume(session: Session, run: Run) -> Run:
    """A paused run goes back to the queue; a training job continues from its latest checkpoint."""
    if run.status != RunStatus.paused:
        raise Conflict(_("Only a paused run can be resumed; this one is %(status)s.", status=run.status.value))
    run.status = RunStatus.queued
    run.pause_requested = False
    add_event(session, run.id, "resumed")
    session.flush()
    enqueue_after_commit(session, run)
    return run


def reconcile(session: Session, *, now: datetime | None = None, resend_all: bool = False) -> dict[str, int]:
    """Re-queue runs whose worker went silent and re-send queued runs the broker may have lost.

    ``resend_all`` (used once when a worker starts) re-sends every queued run: a duplicate message is
    harmless because claiming is conditional.
    """
    settings = get_settings()
    now = now or utcnow()
    counts = {"requeued": 0, "failed": 0, "resent": 0}
    stale_cutoff = now - timedelta(seconds=settings.lease_ttl_seconds)
    stale = session.scalars(select(Run).where(Run.status == RunStatus.running, Run.heartbeat_at < stale_cutoff)).all()
    for run in stale:
        lease = Lease(run.id, run.lease_owner or "", run.attempt)
        outcome = release_for_retry(session, lease, {"code": "lost_heartbeat", "params": {}}, stale_before=stale_cutoff)
        if outcome == RunStatus.queued:
            counts["requeued"] += 1
        elif outcome == RunStatus.failed:
            counts["failed"] += 1
    resend_cutoff = now - timedelta(seconds=settings.requeue_after_seconds)
    lost = session.scalars(
        select(Run).where(
            Run.status == RunStatus.queued,
            or_(Run.enqueued_at.is_(None), Run.enqueued_at < resend_cutoff, literal(resend_all)),
        )
    ).all()
    for run in lost:
        enqueue_after_commit(session, run)
        counts["resent"] += 1
    session.flush()
    return counts
