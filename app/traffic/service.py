"""Traffic: the stored completions a user's applications sent (``store: true``), reviewed and turned into data.

An answer is marked good or bad, or given the answer it should have been (a correction). **Make dataset** turns
the answers a filter selects into a dataset version, validated and cleanable like any upload, and remembers on
each completion which dataset it went into:

* as conversations (SFT): the request's messages and the answer — the correction where there is one; answers
  marked bad without a correction are left out;
* as preference pairs (DPO): a correction is preferred to the model's answer; an answer marked bad is the
  rejected side beside an answer marked good (or corrected) to the same messages."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.core.errors import InvalidInput
from app.core.i18n import _
from app.datasets import service as datasets
from app.db.models import Dataset, StoredCompletion, User
from app.openai_api.stored import get_stored

RATINGS = ("good", "bad")
REVIEWS = ("any", "good", "bad", "unrated", "corrected")
MAX_CORRECTION = 100_000
MAX_PAIRS_PER_PROMPT = 4


@dataclass(frozen=True)
class Filter:
    model: str = ""
    q: str = ""  # words in the messages or the answer, any case
    metadata: str = ""  # key=value
    review: str = "any"
    unused: bool = False  # not in a dataset yet
    dataset: str = ""  # the id of the dataset Make dataset put them into

    def check(self) -> Filter:
        if self.review not in REVIEWS:
            raise InvalidInput(_("Review is one of %(values)s.", values=", ".join(REVIEWS)), field="review")
        if self.metadata and "=" not in self.metadata:
            raise InvalidInput(_("A metadata filter is key=value."), field="metadata")
        return self

    def admits(self, row: StoredCompletion) -> bool:
        if self.metadata:
            key, _sep, value = self.metadata.partition("=")
            if (row.completion_metadata or {}).get(key.strip()) != value.strip():
                return False
        if self.q:
            haystack = (row.answer + " " + " ".join(str(m.get("content", "")) for m in row.messages)).lower()
            if self.q.lower() not in haystack:
                return False
        if self.unused and row.dataset_id is not None:
            return False
        if self.dataset and str(row.dataset_id) != self.dataset:
            return False
        return {
            "any": True,
            "good": row.rating == "good",
            "bad": row.rating == "bad",
            "unrated": row.rating is None and not row.correction,
            "corrected": bool(row.correction),
        }[self.review]


def select_rows(session: Session, user: User, where: Filter, *, limit: int = 0) -> list[StoredCompletion]:
    """The user's stored completions the filter admits, newest first (``limit`` 0: all of them)."""
    stmt = select(StoredCompletion).where(StoredCompletion.owner_id == user.id)
    if where.model:
        stmt = stmt.where(StoredCompletion.model == where.model)
    stmt = stmt.order_by(StoredCompletion.created_at.desc(), StoredCompletion.completion_id.desc())
    found = []
    for row in session.scalars(stmt.execution_options(yield_per=500)):
        if where.admits(row):
            found.append(row)
            if limit and len(found) >= limit:
                break
    return found


def models_served(session: Session, user: User) -> list[str]:
    stmt = select(StoredCompletion.model).where(StoredCompletion.owner_id == user.id).distinct()
    return sorted(session.scalars(stmt))


def review(
    session: Session, user: User, completion_id: str, *, rating: str | None = None, correction: str | None = None
) -> StoredCompletion:
    """Mark an answer good or bad ("" clears the mark), and/or give the answer it should have been ("" clears)."""
    row = get_stored(session, user, completion_id)
    if rating is not None:
        if rating and rating not in RATINGS:
            raise InvalidInput(_("An answer is marked good or bad."), field="rating")
        row.rating = rating or None
    if correction is not None:
        if len(correction) > MAX_CORRECTION:
            raise InvalidInput(_("A correction is at most 100,000 characters."), field="correction")
        row.correction = correction.strip() or None
    session.flush()
    return row


def _conversation(row: StoredCompletion) -> list[dict[str, str]]:
    return [{"role": str(m.get("role")), "content": str(m.get("content", ""))} for m in row.messages]


def sft_records(rows: list[StoredCompletion]) -> tuple[list[dict[str, Any]], list[StoredCompletion]]:
    records, used = [], []
    for row in rows:
        if row.rating == "bad" and not row.correction:
            continue
        answer = row.correction or row.answer
        records.append({"messages": [*_conversation(row), {"role": "assistant", "content": answer}]})
        used.append(row)
    return records, used


def preference_records(rows: list[StoredCompletion]) -> tuple[list[dict[str, Any]], list[StoredCompletion]]:
    records: list[dict[str, Any]] = []
    used: dict[int, StoredCompletion] = {}

    def pair(prompt: list[dict[str, str]], chosen: str, rejected: str) -> None:
        if chosen.strip() != rejected.strip():
            records.append(
                {
                    "prompt": prompt,
                    "chosen": [{"role": "assistant", "content": chosen}],
                    "rejected": [{"role": "assistant", "content": rejected}],
                }
            )

    groups: dict[str, dict[str, list[StoredCompletion]]] = {}
    for row in rows:
        if row.correction:
            pair(_conversation(row), row.correction, row.answer)
            used[id(row)] = row
        key = json.dumps(_conversation(row), sort_keys=True)
        group = groups.setdefault(key, {"good": [], "bad": []})
        if row.rating == "good" or row.correction:
            group["good"].append(row)
        elif row.rating == "bad":
            group["bad"].append(row)
    for group in groups.values():
        for good, bad in [(g, b) for g in group["good"] for b in group["bad"]][:MAX_PAIRS_PER_PROMPT]:
            pair(_conversation(good), good.correction or good.answer, bad.answer)
            used[id(good)], used[id(bad)] = good, bad
    return records, list(used.values())


def make_dataset(
    session: Session, user: User, where: Filter, *, kind: Literal["sft", "preference"], name: str = ""
) -> tuple[Dataset, int]:
    """A dataset (validated in the background like an upload) from the answers the filter selects; the
    completions it used remember it. Returns the dataset and how many records it holds."""
    rows = list(reversed(select_rows(session, user, where.check())))  # oldest first, as they were served
    records, used = preference_records(rows) if kind == "preference" else sft_records(rows)
    if not records:
        raise InvalidInput(
            _(
                "These answers make no records: for conversations, keep at least one answer not marked bad (or "
                "correct one); for preference pairs, correct an answer or mark a good and a bad answer to the same "
                "messages."
            )
        )
    dataset = datasets.dataset_from_records(
        session,
        user=user,
        records=records,
        filename=f"traffic-{kind}.jsonl",
        name=name.strip() or _("Traffic"),
        record_format="preference" if kind == "preference" else "openai_chat",
    )
    for row in used:
        row.dataset_id = dataset.id
    session.flush()
    return dataset, len(records)
