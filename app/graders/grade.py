"""Scoring one sample with a grader: the templates filled from the item and the sample, then the grader's
check. Failures are part of the result (OpenAI's error flags with their details), never an exception."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from app.core.chat import ChatError
from app.graders.formula import FormulaError, evaluate
from app.graders.sandbox import Limits, run_python
from app.graders.similarity import Embed, MetricUnavailable, similarity
from app.graders.specs import (
    Grader,
    LabelModelGrader,
    ModelGrader,
    MultiGrader,
    PythonGrader,
    ScoreModelGrader,
    StringCheckGrader,
    TextSimilarityGrader,
)
from app.graders.template import TemplateError, render, sample_namespace

ERROR_FLAGS = (
    "formula_parse_error",
    "invalid_variable_error",
    "model_grader_parse_error",
    "model_grader_refusal_error",
    "model_grader_server_error",
    "other_error",
    "python_grader_runtime_error",
    "python_grader_server_error",
    "sample_parse_error",
    "truncated_observation_error",
    "unresponsive_reward_error",
)


@dataclass
class Grade:
    """A grader's score for one sample (0 when it failed: a failure never counts as a pass)."""

    name: str
    type: str
    score: float
    sub_scores: dict[str, float] = field(default_factory=dict)  # a multi grader's graders, by name
    errors: dict[str, bool] = field(default_factory=lambda: dict.fromkeys(ERROR_FLAGS, False))
    details: dict[str, str] = field(default_factory=dict)  # the flag's explanation, for the ones set
    seconds: float = 0.0
    model_output: str | None = None  # a model grader's reply, shown beside the score
    sampled_model: str | None = None  # the judge a model grader asked

    @property
    def failed(self) -> bool:
        return any(self.errors.values())

    def fail(self, flag: str, detail: str) -> Grade:
        self.errors[flag] = True
        self.details[flag] = detail
        self.score = 0.0
        return self


def _string_check(grader: StringCheckGrader, text: str, reference: str) -> float:
    if grader.operation == "eq":
        return float(text == reference)
    if grader.operation == "ne":
        return float(text != reference)
    if grader.operation == "like":
        return float(reference in text)
    return float(reference.lower() in text.lower())


# How a model grader reaches its judge: (the grader's model name, messages, sampling params) -> the reply's
# text, raising ChatError; resolved by the caller, who knows the judges (app/graders/judges.py).
AskModel = Callable[[str, list[dict[str, str]], dict[str, Any]], str]


def grade(
    grader: Grader,
    *,
    output_text: str,
    item: dict[str, Any],
    python_limits: Limits | None = None,
    ask: AskModel | None = None,
    embed: Embed | None = None,
) -> Grade:
    """``ask`` reaches a model grader's judge; ``embed`` computes sentence embeddings (cosine similarity)."""
    started = time.monotonic()
    result = _grade(grader, output_text=output_text, item=item, python_limits=python_limits, ask=ask, embed=embed)
    result.seconds = round(time.monotonic() - started, 4)
    return result


def _grade(
    grader: Grader,
    *,
    output_text: str,
    item: dict[str, Any],
    python_limits: Limits | None,
    ask: AskModel | None,
    embed: Embed | None,
) -> Grade:
    result = Grade(name=grader.name, type=grader.type, score=0.0)
    sample = sample_namespace(output_text)
    if isinstance(grader, MultiGrader):
        for name, inner in grader.graders.items():
            sub = _grade(inner, output_text=output_text, item=item, python_limits=python_limits, ask=ask, embed=embed)
            result.sub_scores[name] = sub.score
            for flag, value in sub.errors.items():
                if value:
                    result.errors[flag] = True
                    result.details.setdefault(flag, f"{name}: {sub.details.get(flag, '')}")
        try:
            score = evaluate(grader.calculate_output, result.sub_scores)
        except FormulaError as exc:
            return result.fail("formula_parse_error", str(exc))
        result.score = 0.0 if result.failed else score
        return result
    if isinstance(grader, PythonGrader):
        ran = run_python(grader.source, sample=sample, item=item, limits=python_limits)
        if ran.score is None:
            return result.fail("python_grader_runtime_error", ran.error or "the grader failed")
        result.score = ran.score
        return result
    if isinstance(grader, ScoreModelGrader | LabelModelGrader):
        return _model_grade(grader, result, item=item, sample=sample, ask=ask)
    try:
        text = render(grader.input, item=item, sample=sample)
        reference = render(grader.reference, item=item, sample=sample)
    except TemplateError as exc:
        return result.fail("invalid_variable_error", str(exc))
    if isinstance(grader, StringCheckGrader):
        result.score = _string_check(grader, text, reference)
        return result
    assert isinstance(grader, TextSimilarityGrader)
    try:
        result.score = similarity(grader.evaluation_metric, text, reference, embed)
    except MetricUnavailable as exc:
        return result.fail("other_error", str(exc))
    return result


def score_instruction(grader: ScoreModelGrader) -> str:
    low, high = grader.bounds()
    return (
        f'Reply with one JSON object and nothing else: {{"result": <a number from {low:g} to {high:g}>, '
        '"reason": "<one sentence>"}.'
    )


def label_instruction(grader: LabelModelGrader) -> str:
    return (
        'Reply with one JSON object and nothing else: {"label": "<one of: '
        + ", ".join(grader.labels)
        + '>", "reason": "<one sentence>"}.'
    )


def _reply_object(reply: str) -> dict[str, Any] | None:
    match = re.search(r"\{.*\}", reply, flags=re.DOTALL)
    if match is None:
        return None
    try:
        value = json.loads(match.group(0))
    except json.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def parse_score(grader: ScoreModelGrader, reply: str) -> float:
    """The number the judge answered: {"result": n} (a bare number is taken too); outside the range, or none,
    is a ValueError saying so."""
    value = _reply_object(reply)
    raw: Any = value.get("result", value.get("score")) if value is not None else reply.strip()
    try:
        if isinstance(raw, bool):
            raise ValueError
        number = float(raw)
    except (TypeError, ValueError):
        raise ValueError(f"the judge's reply holds no number as 'result': {reply[:200]!r}") from None
    low, high = grader.bounds()
    if not low <= number <= high:
        raise ValueError(f"the judge answered {number:g}, outside the range [{low:g}, {high:g}]")
    return number


def parse_label(grader: LabelModelGrader, reply: str) -> str:
    value = _reply_object(reply)
    raw = str(value.get("label", "")) if value is not None else reply.strip().strip('."')
    by_folded = {label.casefold(): label for label in grader.labels}
    if raw.strip().casefold() not in by_folded:
        raise ValueError(f"the judge's label {raw[:100]!r} is not one of {', '.join(grader.labels)}")
    return by_folded[raw.strip().casefold()]


def _model_grade(
    grader: ModelGrader, result: Grade, *, item: dict[str, Any], sample: dict[str, Any], ask: AskModel | None
) -> Grade:
    try:
        messages = [{"role": m.role, "content": render(m.text(), item=item, sample=sample)} for m in grader.input]
    except TemplateError as exc:
        return result.fail("invalid_variable_error", str(exc))
    if ask is None:
        return result.fail("model_grader_server_error", "no judge is reachable from here")
    instruction = score_instruction(grader) if isinstance(grader, ScoreModelGrader) else label_instruction(grader)
    messages.append({"role": "system", "content": instruction})
    sampling: dict[str, Any] = {"temperature": 0, "max_tokens": 400}
    params = grader.sampling_params if isinstance(grader, ScoreModelGrader) else None
    if params is not None:
        given = params.model_dump(exclude_none=True)
        if "max_completions_tokens" in given:
            given["max_tokens"] = given.pop("max_completions_tokens")
        sampling |= given
    result.sampled_model = grader.model
    try:
        reply = ask(grader.model, messages, sampling)
    except ChatError as exc:
        return result.fail("model_grader_server_error", f"{exc.kind}: {exc.detail}")
    result.model_output = reply[:4000]
    try:
        if isinstance(grader, ScoreModelGrader):
            result.score = parse_score(grader, reply)
        else:
            result.score = float(parse_label(grader, reply) in grader.passing_labels)
    except ValueError as exc:
        return result.fail("model_grader_parse_error", str(exc))
    return result
