"""Issue 25, finding 3 (the queue's part): one user's runs cannot hold every worker slot while another
user's work waits. A run yields its turn when another user has work queued on the same queue and was served
less recently; it stays queued and is sent again shortly. Same SQL on SQLite and PostgreSQL."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest

from app.core.config import get_settings
from app.db.base import utcnow
from app.db.models import Role, Run, RunStatus, User
from app.db.session import session_scope
from app.runs import service as runs

pytestmark = pytest.mark.postgres_too  # SQL dialects, locking and the schema: both databases


def _user(email: str) -> uuid.UUID:
    with session_scope() as session:
        user = User(email=email, password_hash="x", role=Role.member)
        session.add(user)
        session.flush()
        return user.id


def _run(owner: uuid.UUID | None, queue: str = "cpu") -> uuid.UUID:
    with session_scope() as session:
        user = session.get(User, owner) if owner else None
        return runs.create_run(session, kind="test", owner=user, params={}, queue=queue).id


def _claim(run_id: uuid.UUID) -> runs.Lease | None:
    with session_scope() as session:
        return runs.claim(session, run_id, "worker-1")


def test_a_user_with_a_running_run_yields_the_next_slot_to_someone_waiting(env: Any) -> None:
    alice, bob = _user("alice@example.com"), _user("bob@example.com")
    a1, a2, a3 = _run(alice), _run(alice), _run(alice)
    b1 = _run(bob)
    other_queue = _run(alice, queue="gpu")
    system = _run(None)

    assert _claim(a1) is not None  # nobody else waits: alice is served
    before = utcnow()
    assert _claim(a2) is None and _claim(a3) is None  # bob waits and was never served: alice yields
    with session_scope() as session:
        for run_id in (a2, a3):
            run = session.get(Run, run_id)
            assert run is not None and run.status == RunStatus.queued and run.attempt == 0
            # sent again by the next reconciler sweep, in seconds, not after the usual two minutes
            resend_at = run.enqueued_at + timedelta(seconds=get_settings().requeue_after_seconds)
            assert resend_at - before < timedelta(seconds=runs.DEFER_SECONDS + 1)
    assert _claim(other_queue) is not None  # turns are per queue: bob waits on cpu only
    assert _claim(system) is not None  # the system's own runs never yield
    assert _claim(b1) is not None  # bob's turn
    assert _claim(a2) is not None  # bob was served after alice: alice's turn again, nobody else waits
    assert _claim(a3) is not None


def test_turns_alternate_between_two_busy_users(env: Any) -> None:
    alice, bob = _user("alice@example.com"), _user("bob@example.com")
    order: list[str] = []
    pending = {"a": [_run(alice) for _ in range(3)], "b": []}
    pending["b"] = [_run(bob) for _ in range(3)]
    # a single slot taking messages in the order they were sent: alice's three first, then bob's
    messages = [("a", r) for r in pending["a"]] + [("b", r) for r in pending["b"]]
    for _ in range(20):
        if not messages:
            break
        who, run_id = messages.pop(0)
        lease = _claim(run_id)
        if lease is None:
            messages.append((who, run_id))  # the reconciler sends it again
            continue
        order.append(who)
        with session_scope() as session:
            runs.finish(session, lease, RunStatus.succeeded, result={})
    assert order == ["a", "b", "a", "b", "a", "b"], order
