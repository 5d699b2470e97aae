"""Graders as the reward of reinforcement fine-tuning (GRPO and RLOO): which graders can be one, and the
reward function the training child hands the trainer. The score of a failed grade is 0, as everywhere."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from pydantic import TypeAdapter, ValidationError

from app.graders.checks import GraderInvalid, validate
from app.graders.grade import grade
from app.graders.similarity import Embed
from app.graders.specs import Grader, LabelModelGrader, MultiGrader, ScoreModelGrader

GRADER = TypeAdapter(Grader)


def _asks_a_judge(grader: Any) -> bool:
    if isinstance(grader, MultiGrader):
        return any(_asks_a_judge(inner) for inner in grader.graders.values())
    return isinstance(grader, ScoreModelGrader | LabelModelGrader)


def reward_grader(raw: Any) -> dict[str, Any]:
    """The grader a reinforcement job is rewarded by, checked; a ValueError says what is wrong (the spec's
    validation turns it into the field's error)."""
    try:
        grader = GRADER.validate_python(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        raise ValueError(f"{where}: {first.get('msg', 'invalid')}" if where else str(first.get("msg"))) from None
    if _asks_a_judge(grader):
        raise ValueError(
            "a reward is computed for every generated answer inside the training process, which reaches no judge: "
            "use string_check, text_similarity, python or a multi of those (model graders work in evaluations)"
        )
    try:
        validate(grader, "grader", in_worker=True)
    except GraderInvalid as exc:
        raise ValueError(f"{exc.field}: {exc}") from None
    return grader.model_dump(mode="json", exclude_none=True)


def _text(completion: Any) -> str:
    """A generated answer's text: TRL hands conversational completions as a list of messages."""
    if isinstance(completion, list):
        return "".join(str(m.get("content", "")) for m in completion if isinstance(m, dict))
    return str(completion)


def reward_function(spec: dict[str, Any], embed: Embed | None = None) -> Callable[..., list[float]]:
    """TRL's reward function for the grader: each answer graded against its record (the dataset's ``item``
    column, JSON); the share of answers whose grading failed is logged beside the reward."""
    grader = GRADER.validate_python(spec)

    def reward(completions: list[Any], item: list[str] | None = None, **kwargs: Any) -> list[float]:
        items = item or ["{}"] * len(completions)
        scores, failed = [], 0
        for completion, raw in zip(completions, items, strict=True):
            result = grade(grader, output_text=_text(completion), item=json.loads(raw), embed=embed)
            failed += result.failed
            scores.append(result.score)
        log_metric = kwargs.get("log_metric")
        if callable(log_metric):
            log_metric("grader_failed", failed / max(1, len(completions)))
        return scores

    # the trainer logs the reward under the function's name: the grader's, as a metric key
    reward.__name__ = re.sub(r"\W+", "_", grader.name).strip("_") or "grader"
    return reward
