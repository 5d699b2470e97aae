"""Distillation: a teacher (any model set up under Judges) answers a dataset version's prompts in a background
run (worker/evaluation/distill.py) — progress, a new attempt goes on where the last stopped, failures and tokens
counted; its answers arrive on the Traffic page as stored completions of model ``teacher:<name>`` to review,
correct and Make dataset from, then train a small student on."""

from __future__ import annotations

import uuid

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.core.errors import InvalidInput
from app.core.i18n import _
from app.db.models import Run, User
from app.evaluation.judges import get_judge
from app.jobs.service import owned_version
from app.runs import service as runs

DISTILL_KIND = "distill"


def teacher_model(name: str) -> str:
    return f"teacher:{name}"[:300]


def start(
    session: Session,
    *,
    user: User,
    judge_id: uuid.UUID,
    version_id: uuid.UUID,
    limit: int = 200,
    max_tokens: int = 512,
    temperature: float = 0.0,
) -> Run:
    judge = get_judge(session, judge_id)
    _dataset, version = owned_version(session, version_id, user=user)
    if not 1 <= limit <= 100_000 or not 1 <= max_tokens <= 8192 or not 0 <= temperature <= 2:
        raise InvalidInput(_("Prompts are 1–100,000, answer tokens 1–8192 and the temperature 0–2."), field="limit")
    if not version.split_counts.get("train"):
        raise InvalidInput(_("This dataset version has no train split to take prompts from."), field="version_id")
    params = {
        "judge_id": str(judge.id),
        "judge_name": judge.name,
        "version_id": str(version.id),
        "limit": limit,
        "max_tokens": max_tokens,
        "temperature": temperature,
    }
    return runs.create_run(session, kind=DISTILL_KIND, owner=user, params=params)


def recent(session: Session, *, user: User, count: int = 5) -> list[Run]:
    stmt = (
        select(Run)
        .where(Run.kind == DISTILL_KIND, Run.owner_id == user.id)
        .order_by(Run.created_at.desc())
        .limit(count)
    )
    return list(session.scalars(stmt))
