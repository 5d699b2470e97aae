"""Graders a user keeps by name (the Evaluations page, ``/api/v1/graders``): checked when saved, then attached
to a job's evaluation or made the reward of a reinforcement job, each of which copies the spec it uses."""

from __future__ import annotations

import uuid
from typing import Any

from pydantic import TypeAdapter, ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.core.errors import InvalidInput
from app.core.i18n import _
from app.core.ownership import get_owned
from app.core.validation import describe_error
from app.db.models import SavedGrader, User
from app.evaluation.judges import check_grader_models
from app.graders.checks import GraderInvalid, validate
from app.graders.grade import Grade, grade
from app.graders.specs import Grader

GRADER = TypeAdapter(Grader)


def parse_grader(raw: Any, *, field: str = "spec", session: Session | None = None) -> Grader:
    """A grader object as OpenAI writes it, checked as it will run (in the worker: cosine similarity is
    allowed); errors name the field."""
    try:
        grader = GRADER.validate_python(raw)
    except ValidationError as exc:
        first: dict[str, Any] = dict(exc.errors()[0])
        loc: tuple[Any, ...] = tuple(first.get("loc") or ())
        where = ".".join(str(p) for p in loc if not str(p).startswith("function-"))
        raise InvalidInput(describe_error(first), field=f"{field}.{where}" if where else field) from None
    try:
        validate(grader, field, in_worker=True)
    except GraderInvalid as exc:
        raise InvalidInput(str(exc), field=exc.field) from None
    if session is not None:
        check_grader_models(session, grader)
    return grader


def create_grader(session: Session, *, user: User, name: str, spec: Any) -> SavedGrader:
    name = name.strip()
    if not name or len(name) > 100:
        raise InvalidInput(_("Give the grader a name of 1 to 100 characters."), field="name")
    if isinstance(spec, dict):
        spec = {**spec, "name": name}  # the name it is saved under is the one its scores are shown with
    grader = parse_grader(spec, session=session)
    row = SavedGrader(owner_id=user.id, name=name, spec=grader.model_dump(mode="json", exclude_none=True))
    session.add(row)
    session.flush()
    return row


def list_graders(session: Session, *, user: User) -> list[SavedGrader]:
    stmt = select(SavedGrader).where(SavedGrader.owner_id == user.id).order_by(SavedGrader.created_at.desc())
    return list(session.scalars(stmt))


def get_grader(session: Session, grader_id: uuid.UUID, *, user: User) -> SavedGrader:
    return get_owned(session, SavedGrader, grader_id, user=user, message=_("No such grader."))


def delete_grader(session: Session, row: SavedGrader) -> None:
    session.delete(row)
    session.flush()


def attached(session: Session, grader_ids: list[uuid.UUID], *, user: User) -> list[dict[str, Any]]:
    """The specs of the user's graders picked for an evaluation, in the order picked (how many: the options'
    bound)."""
    found = []
    for grader_id in dict.fromkeys(grader_ids):
        row = get_grader(session, grader_id, user=user)
        found.append(row.spec)
    return found


def try_grader(session: Session, grader: Grader, *, output_text: str, item: dict[str, Any]) -> Grade:
    """One grade for the "try it" box (and /v1's graders/run): cosine similarity is refused here with the reason
    (the web process loads no embedding model), a model grader asks its judge with no transaction open."""
    from app.core.deps import end_reads
    from app.evaluation.judges import GraderJudges

    try:
        validate(grader)
    except GraderInvalid as exc:
        raise InvalidInput(str(exc), field=exc.field) from None
    judges = GraderJudges(session)
    end_reads(session)
    try:
        return grade(grader, output_text=output_text, item=item, ask=judges)
    finally:
        judges.close()
