"""Turn a dataset version (Parquet of canonical records) into what each trainer consumes."""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

from app.datasets.template import ChatRenderer
from app.graders.template import record_item


class DataError(ValueError):
    """The data cannot be trained on: a text code (app/runs/messages.py) saying what to change."""

    def __init__(self, code: str, **params: Any) -> None:
        super().__init__(code)
        self.code = code
        self.params = params


def read_records(path: Path, *, split: str | None, kinds: set[str]) -> list[dict[str, Any]]:
    """The records of one split (every split with ``None``) of these kinds."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    table = pq.read_table(str(path), columns=["id", "kind", "split", "data"])
    if split is not None:
        table = table.filter(pc.equal(table["split"], split))
    return [
        {"id": r["id"], "kind": r["kind"], **json.loads(r["data"])} for r in table.to_pylist() if r["kind"] in kinds
    ]


def sft_rows(
    records: list[dict[str, Any]], renderer: ChatRenderer, *, max_length: int, assistant_only: bool
) -> list[dict[str, list[int]]]:
    """Pre-tokenised rows with our own assistant mask (built from the rendered turns, so it is right for
    templates without generation markers such as SmolLM2's)."""
    rows = []
    for record in records:
        ids, mask = renderer.encode(record["messages"], tools=record.get("tools"))
        if not assistant_only:
            mask = [1] * len(ids)
        ids, mask = ids[:max_length], mask[:max_length]
        if any(mask):  # a record truncated before its answer teaches nothing
            rows.append({"input_ids": ids, "assistant_masks": mask})
    return rows


def cpt_rows(records: list[dict[str, Any]], renderer: ChatRenderer, *, max_length: int) -> list[dict[str, list[int]]]:
    rows = []
    for record in records:
        if record["kind"] == "text":
            text = record["text"]
        else:
            text = renderer.render(record["messages"], tools=record.get("tools"))
        ids = renderer.token_ids(text)
        for start in range(0, len(ids), max_length):  # long documents become several training windows
            chunk = ids[start : start + max_length]
            if len(chunk) > 1:
                rows.append({"input_ids": chunk, "assistant_masks": [1] * len(chunk)})
    return rows


def mix_general(
    domain: list[dict[str, Any]], general: list[dict[str, Any]], ratio: int, seed: int
) -> list[dict[str, Any]]:
    """1 domain : ``ratio`` general rows (as far as the general corpus goes), shuffled with the seed."""
    rng = random.Random(seed)  # noqa: S311  (reproducible shuffling, not security)
    wanted = min(len(general), ratio * len(domain))
    mixed = domain + rng.sample(general, wanted)
    rng.shuffle(mixed)
    return mixed


def draw(rows: list[dict[str, Any]], wanted: int, rng: random.Random) -> list[dict[str, Any]]:
    """``wanted`` rows: a sample without repeats when there are enough, else every row as often as fits and a
    sample for the rest."""
    if not rows or wanted <= 0:
        return []
    whole, rest = divmod(wanted, len(rows))
    return rows * whole + rng.sample(rows, rest)


def mix_versions(
    train: list[dict[str, Any]],
    parts: list[dict[str, Any]],
    rows_of: Callable[[Path], list[dict[str, Any]]],
    seed: int,
) -> tuple[list[dict[str, Any]], list[int]]:
    """The job's rows and, per mixed-in version (``{"path", "ratio"}``), ``round(ratio × len(train))`` of its
    rows, shuffled with the seed; with how many rows each version gave."""
    rng = random.Random(seed)  # noqa: S311  (reproducible sampling, not security)
    mixed, counts = list(train), []
    for part in parts:
        drawn = draw(rows_of(Path(part["path"])), round(float(part["ratio"]) * len(train)), rng)
        counts.append(len(drawn))
        mixed += drawn
    rng.shuffle(mixed)
    return mixed, counts


def dpo_rows(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """TRL's conversational preference format: the trainer applies the model's chat template."""
    return [{"prompt": r["prompt"], "chosen": r["chosen"], "rejected": r["rejected"]} for r in records]


def kto_rows(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """TRL's unpaired format: the conversation up to the answer, the answer, and whether it is good."""
    return [
        {"prompt": r["messages"][:-1], "completion": r["messages"][-1:], "label": bool(r["label"])}
        for r in records
        if len(r["messages"]) > 1
    ]


def prompt_rows(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Prompts for reinforcement: a conversation up to its last assistant turn, or a preference pair's prompt,
    each with the record a reward grader reads as ``item`` (JSON: its other fields, its answer as reference)."""
    rows = []
    for record in records:
        reference = None
        if record["kind"] == "preference":
            prompt = record["prompt"]
            reference = record["chosen"][-1]["content"] if record["chosen"] else None
        else:
            messages = record["messages"]
            last = max((i for i, m in enumerate(messages) if m["role"] == "assistant"), default=len(messages))
            prompt = messages[:last]
            reference = messages[last]["content"] if last < len(messages) else None
        if prompt and prompt[-1]["role"] == "user":
            item = json.dumps(record_item(record, reference), ensure_ascii=False)
            rows.append({"prompt": [{"role": m["role"], "content": m["content"]} for m in prompt], "item": item})
    return rows
