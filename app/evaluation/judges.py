"""LLM judges: set up by an administrator (any OpenAI-compatible endpoint, or an imported base model served
by our inference process), used by everyone to grade an evaluation's answers; and people's own labels on
samples, to see how far a judge agrees with them before trusting it."""

from __future__ import annotations

import json
import uuid
from typing import Any

from pydantic import BaseModel, Field, field_validator
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.core.chat import ChatClient, ChatError
from app.core.config import get_settings
from app.core.errors import Conflict, Forbidden, InvalidInput, NotFound
from app.core.i18n import _
from app.core.outbound import OutboundRefused, check_url
from app.core.ownership import get_owned
from app.datasets.storage import artifact_path
from app.db.models import BaseModelRecord, Evaluation, Judge, Judgement, ModelStatus, RunStatus, SampleLabel, User
from app.evaluation import service as evaluations
from app.graders.specs import LabelModelGrader, MultiGrader, ScoreModelGrader
from app.runs import service as runs

JUDGE_KIND = "judging"
KINDS = ("endpoint", "local")
CHOICES = ("base", "tuned", "tie")


class JudgeCreate(BaseModel):
    name: str = Field(min_length=1, max_length=100, description="How people pick this judge.")
    kind: str = Field("endpoint", pattern="^(endpoint|local)$", description="endpoint or local.")
    url: str | None = Field(
        None, max_length=500, description="An OpenAI-compatible base URL, e.g. https://host/v1 (endpoint)."
    )
    model: str | None = Field(None, max_length=200, description="The model name the endpoint serves (endpoint).")
    api_key: str | None = Field(None, max_length=500, description="Sent as a bearer token; never shown again.")
    base_model_id: uuid.UUID | None = Field(None, description="An imported base model to judge with (local).")
    timeout_s: int = Field(60, ge=1, le=600, description="Seconds to wait for one verdict.")

    @field_validator("name", "url", "model", "api_key")
    @classmethod
    def strip(cls, value: str | None) -> str | None:
        return value.strip() or None if value is not None else None


def require_admin(user: User) -> None:
    if not user.is_admin:
        raise Forbidden(_("Only an administrator can set up judges."))


def create_judge(session: Session, *, user: User, body: JudgeCreate) -> Judge:
    require_admin(user)
    if not body.name:
        raise InvalidInput(_("Give the judge a name."), field="name")
    if body.kind == "endpoint":
        if not body.url or not body.url.startswith(("http://", "https://")):
            raise InvalidInput(
                _("Give the endpoint's base URL, starting with http:// or https:// (e.g. http://host:8000/v1)."),
                field="url",
            )
        try:
            check_url(body.url, unresolvable_ok=True)
        except OutboundRefused as exc:
            raise InvalidInput(
                _("This URL cannot be used for a judge: %(reason)s.", reason=exc.reason), field="url"
            ) from exc
        if not body.model:
            raise InvalidInput(_("Give the model name the endpoint serves."), field="model")
        judge = Judge(name=body.name, kind="endpoint", url=body.url, model=body.model, api_key=body.api_key)
    else:
        if body.base_model_id is None:
            raise InvalidInput(_("Pick the base model that judges."), field="base_model_id")
        model = get_owned(
            session, BaseModelRecord, body.base_model_id, user=user, message=_("No such model."), shared_ok=True
        )
        if model.status != ModelStatus.ready:
            raise InvalidInput(_("That model is not ready yet; wait for its import to finish."), field="base_model_id")
        judge = Judge(name=body.name, kind="local", model=f"base-{model.id}", base_model_id=model.id)
    judge.timeout_s = body.timeout_s
    try:
        with session.begin_nested():
            session.add(judge)
            session.flush()
    except IntegrityError as exc:
        raise Conflict(_("A judge with this name exists already; pick another name."), field="name") from exc
    return judge


def list_judges(session: Session) -> list[Judge]:
    return list(session.scalars(select(Judge).order_by(Judge.name)))


def get_judge(session: Session, judge_id: uuid.UUID) -> Judge:
    judge = session.get(Judge, judge_id)
    if judge is None:
        raise NotFound(_("No such judge."))
    return judge


def delete_judge(session: Session, *, user: User, judge_id: uuid.UUID) -> None:
    require_admin(user)
    session.delete(get_judge(session, judge_id))


def endpoint(judge: Judge) -> tuple[str, str]:
    """(base URL, model name) to send chat completions to."""
    if judge.kind == "local":
        return f"{get_settings().inference_base_url}/v1", judge.model
    return judge.url or "", judge.model


def _new_judgement(session: Session, user: User, evaluation: Evaluation, judge: Judge) -> Judgement:
    judgement = Judgement(
        owner_id=user.id, evaluation_id=evaluation.id, judge_id=judge.id, judge_name=judge.name, storage_key=""
    )
    session.add(judgement)
    session.flush()
    judgement.storage_key = f"judgements/{judgement.id.hex}"
    params = {"judgement_id": str(judgement.id)}
    judgement.run_id = runs.create_run(session, kind=JUDGE_KIND, owner=user, params=params).id
    session.flush()
    return judgement


def start_judgement(session: Session, *, user: User, evaluation: Evaluation, judge: Judge) -> Judgement:
    if evaluations.evaluation_run(session, evaluation).status != RunStatus.succeeded:
        raise InvalidInput(_("The evaluation has to finish before its answers can be judged."))
    return _new_judgement(session, user, evaluation, judge)


def judge_after_evaluation(session: Session, evaluation: Evaluation) -> Judgement | None:
    """The judgement an evaluation asked for in its options, started as the evaluation succeeds."""
    raw = evaluation.options.get("judge_id")
    judge = session.get(Judge, uuid.UUID(raw)) if raw else None
    user = session.get(User, evaluation.owner_id)
    if judge is None or user is None:
        return None
    return _new_judgement(session, user, evaluation, judge)


def judgements_for(session: Session, evaluation: Evaluation) -> list[Judgement]:
    stmt = select(Judgement).where(Judgement.evaluation_id == evaluation.id).order_by(Judgement.created_at.desc())
    return list(session.scalars(stmt))


def verdicts(judgement: Judgement) -> dict[str, dict[str, Any]]:
    path = artifact_path(f"{judgement.storage_key}/verdicts.jsonl")
    if not judgement.storage_key or not path.is_file():
        return {}
    rows = (json.loads(line) for line in path.read_text().splitlines() if line.strip())
    return {str(row["id"]): row for row in rows}


def labels_for(session: Session, evaluation: Evaluation) -> dict[str, str]:
    stmt = select(SampleLabel).where(SampleLabel.evaluation_id == evaluation.id)
    return {label.sample_id: label.choice for label in session.scalars(stmt)}


def set_label(session: Session, *, user: User, evaluation: Evaluation, sample_id: str, choice: str) -> None:
    """Record (or with ``choice`` "clear", remove) the person's pick of the better answer for one sample."""
    if sample_id not in {str(s["id"]) for s in evaluations.samples(evaluation)}:
        raise NotFound(_("No such sample in this evaluation."))
    label = session.scalar(
        select(SampleLabel).where(SampleLabel.evaluation_id == evaluation.id, SampleLabel.sample_id == sample_id)
    )
    if choice == "clear":
        if label is not None:
            session.delete(label)
        return
    if choice not in CHOICES:
        raise InvalidInput(_("Pick base, tuned or tie."), field="choice")
    if label is None:
        session.add(SampleLabel(owner_id=user.id, evaluation_id=evaluation.id, sample_id=sample_id, choice=choice))
    else:
        label.choice = choice
    session.flush()


def agreement(found: dict[str, dict[str, Any]], labels: dict[str, str]) -> dict[str, Any]:
    """How often the judge's pairwise verdict matches the person's label, over the labelled samples the judge
    gave a verdict on (a verdict that flipped with the answers' order counts as a tie)."""
    compared = agreed = 0
    for sample_id, choice in labels.items():
        winner = (found.get(sample_id) or {}).get("pairwise", {}).get("winner")
        if winner is None:
            continue
        compared += 1
        agreed += int(("tie" if winner == "inconsistent" else winner) == choice)
    return {
        "labelled": len(labels),
        "compared": compared,
        "agreed": agreed,
        "rate": agreed / compared if compared else None,
    }


def find_judge(session: Session, name: str) -> Judge | None:
    """The judge a model grader names: by the judge's name, else by the model name it serves."""
    return session.scalar(select(Judge).where(Judge.name == name)) or session.scalar(
        select(Judge).where(Judge.model == name).order_by(Judge.name).limit(1)
    )


def check_grader_models(session: Session, grader: Any, prefix: str = "grader") -> None:
    """Every model grader in ``grader`` (a multi's too) names a judge set up here."""
    if isinstance(grader, MultiGrader):
        for name, sub in grader.graders.items():
            check_grader_models(session, sub, f"{prefix}.graders.{name}")
        return
    model = grader.model if isinstance(grader, ScoreModelGrader | LabelModelGrader) else None
    if model is not None and find_judge(session, model) is None:
        names = ", ".join(j.name for j in list_judges(session)) or _("none yet")
        raise InvalidInput(
            _(
                "No judge is called '%(model)s'. A model grader's model names a judge an administrator set up "
                "(Settings → Judges); the judges here: %(names)s.",
                model=model,
                names=names,
            ),
            field=f"{prefix}.model",
        )


class GraderJudges:
    """Asks the judges a grader names (app/graders/grade.AskModel), one client per judge, reading the judges
    once: nothing touches the database while an answer is awaited."""

    def __init__(self, session: Session) -> None:
        settings = get_settings()
        self.endpoints: dict[str, tuple[str, str, str | None, float]] = {}
        for judge in list_judges(session):
            url, model = endpoint(judge)
            key = settings.inference_key() if judge.kind == "local" else judge.api_key
            entry = (url, model, key, float(judge.timeout_s or 60))
            self.endpoints.setdefault(judge.name, entry)
            self.endpoints.setdefault(judge.model or judge.name, entry)
        self.clients: dict[str, ChatClient] = {}

    def __call__(self, name: str, messages: list[dict[str, str]], sampling: dict[str, Any]) -> str:
        if name not in self.endpoints:
            raise ChatError("refused", f"no judge is called {name!r}")
        if name not in self.clients:
            url, model, key, timeout_s = self.endpoints[name]
            self.clients[name] = ChatClient(url, model, key, timeout_s)
        return self.clients[name].ask(messages, **sampling)

    def close(self) -> None:
        for client in self.clients.values():
            client.close()
