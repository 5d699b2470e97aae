"""The playground: which models a user may chat with, feedback on answers, and the preference dataset made
from that feedback."""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.basemodels import service as models
from app.core.errors import InvalidInput, NotFound
from app.core.i18n import _
from app.datasets import service as datasets
from app.datasets.storage import artifact_path
from app.db.models import Dataset, Deployment, Feedback, ModelStatus, RunStatus, User
from app.jobs import files as job_files
from app.jobs import service as jobs
from app.jobs.checkpoints import complete_checkpoints
from app.jobs.spec import Method

CHOICES = ("up", "down", "a", "b")
MAX_PAIRS_PER_PROMPT = 4


@dataclass(frozen=True)
class ChatModel:
    name: str  # what the inference server is asked for
    label: str
    group: str  # "base", "adapter" or "checkpoint"


def chat_models(session: Session, *, user: User) -> list[ChatModel]:
    """Base models, succeeded jobs' adapters, and the complete checkpoints of any of the user's jobs."""
    found = [
        ChatModel(f"base-{m.id}", m.name, "base")
        for m in models.list_models(session, user=user)
        if m.status == ModelStatus.ready
    ]
    for job in jobs.list_jobs(session, user=user):
        if job.spec.get("method") == Method.reward.value:
            continue
        if jobs.job_run(session, job).status == RunStatus.succeeded and job_files.final_dir(job).is_dir():
            found.append(ChatModel(f"job-{job.id}", job.name, "adapter"))
        # names only: the listing with losses and sizes (job_files.checkpoints) reads far more than this needs
        for _step, path in complete_checkpoints(artifact_path(f"{job.storage_key}/checkpoints")):
            found.append(ChatModel(f"job-{job.id}@{path.name}", f"{job.name} · {path.name}", "checkpoint"))
    stmt = select(Deployment).where(Deployment.owner_id == user.id).order_by(Deployment.name)
    found += [ChatModel(f"deployment-{d.id}", d.name, "deployment") for d in session.scalars(stmt)]
    return found


def served_model(session: Session, name: str) -> str:
    """What the inference process is asked for: a deployment's model at this moment, any other name as it is."""
    if name.startswith("deployment-"):
        deployment = session.get(Deployment, uuid.UUID(name.removeprefix("deployment-")))
        if deployment is None:
            raise NotFound(_("No such model."))
        return deployment.target
    return name


def check_model(session: Session, name: str, *, user: User) -> str:
    """The name if this user may chat with it (404 otherwise, as for any object of someone else)."""
    if name not in {m.name for m in chat_models(session, user=user)}:
        raise NotFound(_("No such model."))
    return name


def _messages(raw: Any, field: str) -> list[dict[str, str]]:
    if not isinstance(raw, list) or not raw or len(raw) > 200:
        raise InvalidInput(_("%(field)s must be a list of messages.", field=field), field=field)
    out = []
    for item in raw:
        if (
            not isinstance(item, dict)
            or item.get("role") not in ("system", "user", "assistant")
            or not isinstance(item.get("content"), str)
        ):
            raise InvalidInput(
                _("Each message needs a role (system, user or assistant) and a text content."), field=field
            )
        out.append({"role": item["role"], "content": item["content"][:100_000]})
    return out


PAIR_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


def chat_request(
    session: Session, body: dict[str, Any], *, user: User
) -> tuple[str, list[dict[str, str]], dict[str, Any]]:
    model = check_model(session, str(body.get("model", "")), user=user)
    messages = _messages(body.get("messages"), "messages")
    if messages[-1]["role"] != "user":
        raise InvalidInput(_("The last message must be the user's."), field="messages")
    try:
        params: dict[str, Any] = {
            "temperature": min(2.0, max(0.0, float(body.get("temperature", 0.7)))),
            "top_p": min(1.0, max(0.01, float(body.get("top_p", 1.0)))),
            "max_tokens": min(4096, max(1, int(body.get("max_tokens", 256)))),
        }
    except (TypeError, ValueError) as exc:
        raise InvalidInput(_("Temperature, top-p and max tokens must be numbers.")) from exc
    pair = body.get("pair")
    if isinstance(pair, str) and PAIR_ID.fullmatch(pair):  # side by side: both answers generated together
        params["pair"] = pair
    return served_model(session, model), messages, params


def save_feedback(session: Session, body: dict[str, Any], *, user: User) -> Feedback:
    choice = body.get("choice")
    if choice not in CHOICES:
        raise InvalidInput(_("Choose up, down, a or b."), field="choice")
    model_a = check_model(session, str(body.get("model_a", "")), user=user)
    pairwise = choice in ("a", "b")
    model_b = check_model(session, str(body.get("model_b", "")), user=user) if pairwise else None
    answer_a, answer_b = body.get("answer_a"), body.get("answer_b") if pairwise else None
    if not isinstance(answer_a, str) or (pairwise and not isinstance(answer_b, str)):
        raise InvalidInput(_("The answers are missing."), field="answer_a")
    chosen_cut = {"up": "cut_a", "a": "cut_a", "b": "cut_b"}.get(str(choice))
    if chosen_cut and body.get(chosen_cut) is True:  # it would become the "chosen" answer of a preference pair
        raise InvalidInput(
            _("An answer cut off at the max tokens limit cannot be the better one: raise Max tokens and ask again."),
            field="choice",
        )
    feedback = Feedback(
        owner_id=user.id,
        prompt=_messages(body.get("prompt"), "prompt"),
        model_a=model_a,
        answer_a=answer_a[:100_000],
        model_b=model_b,
        answer_b=answer_b[:100_000] if isinstance(answer_b, str) else None,
        choice=choice,
    )
    session.add(feedback)
    session.flush()
    return feedback


def unused_feedback(session: Session, *, user: User) -> list[Feedback]:
    stmt = (
        select(Feedback)
        .where(Feedback.owner_id == user.id, Feedback.dataset_id.is_(None))
        .order_by(Feedback.created_at)
    )
    return list(session.scalars(stmt))


def preference_records(feedback: list[Feedback]) -> tuple[list[dict[str, Any]], list[Feedback]]:
    """Pairwise picks become (chosen, rejected) directly; thumbs pair an up with a down answer to the same
    prompt. Returns the records and the feedback they used."""
    records: list[dict[str, Any]] = []
    used: list[Feedback] = []

    def record(prompt: list[dict[str, str]], chosen: str, rejected: str) -> dict[str, Any]:
        return {
            "prompt": prompt,
            "chosen": [{"role": "assistant", "content": chosen}],
            "rejected": [{"role": "assistant", "content": rejected}],
        }

    by_prompt: dict[str, dict[str, list[Feedback]]] = {}
    for item in feedback:
        if item.choice in ("a", "b") and item.answer_b is not None:
            chosen, rejected = (item.answer_a, item.answer_b) if item.choice == "a" else (item.answer_b, item.answer_a)
            if chosen.strip() != rejected.strip():
                records.append(record(item.prompt, chosen, rejected))
                used.append(item)
        elif item.choice in ("up", "down"):
            by_prompt.setdefault(json.dumps(item.prompt, sort_keys=True), {"up": [], "down": []})[item.choice].append(
                item
            )
    for group in by_prompt.values():
        pairs = [(u, d) for u in group["up"] for d in group["down"]][:MAX_PAIRS_PER_PROMPT]
        for good, bad in pairs:
            records.append(record(good.prompt, good.answer_a, bad.answer_a))
        if pairs:
            used += {id(x): x for pair in pairs for x in pair}.values()
    return records, used


def make_preference_dataset(session: Session, *, user: User, name: str = "") -> Dataset:
    records, used = preference_records(unused_feedback(session, user=user))
    if not records:
        raise InvalidInput(
            _(
                "No preference pairs yet: pick the better of two side-by-side answers, or give a thumbs up and a "
                "thumbs down to two answers of the same prompt."
            )
        )
    dataset = datasets.dataset_from_records(
        session,
        user=user,
        records=records,
        filename="playground-preferences.jsonl",
        name=name.strip() or _("Playground preferences"),
        record_format="preference",
    )
    for item in used:
        item.dataset_id = dataset.id
    session.flush()
    return dataset


def feedback_counts(session: Session, *, user: User) -> dict[str, int]:
    counts = dict.fromkeys(CHOICES, 0)
    for item in unused_feedback(session, user=user):
        counts[item.choice] += 1
    return counts
