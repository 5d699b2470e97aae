"""Scoring one sample with a grader: the templates filled from the item and the sample, then the grader's
check. Failures are part of the result (OpenAI's error flags with their details), never an exception."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from app.graders.formula import FormulaError, evaluate
from app.graders.sandbox import Limits, run_python
from app.graders.similarity import MetricUnavailable, similarity
from app.graders.specs import Grader, MultiGrader, PythonGrader, StringCheckGrader, TextSimilarityGrader
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


def grade(grader: Grader, *, output_text: str, item: dict[str, Any], python_limits: Limits | None = None) -> Grade:
    started = time.monotonic()
    result = _grade(grader, output_text=output_text, item=item, python_limits=python_limits)
    result.seconds = round(time.monotonic() - started, 4)
    return result


def _grade(grader: Grader, *, output_text: str, item: dict[str, Any], python_limits: Limits | None) -> Grade:
    result = Grade(name=grader.name, type=grader.type, score=0.0)
    sample = sample_namespace(output_text)
    if isinstance(grader, MultiGrader):
        for name, inner in grader.graders.items():
            sub = _grade(inner, output_text=output_text, item=item, python_limits=python_limits)
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
        result.score = similarity(grader.evaluation_metric, text, reference)
    except MetricUnavailable as exc:
        return result.fail("other_error", str(exc))
    return result
