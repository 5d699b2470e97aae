"""Checking a grader before anything runs (``/validate``, and when one is saved): templates name only
``item``/``sample``, a formula is arithmetic over its graders' names, a python grader's source parses and
defines ``grade(sample, item)``, the metric is one this installation computes, a score range is ordered and
passing labels are labels. That a model grader's model names a judge is checked where the judges are known
(app/evaluation/judges.py)."""

from __future__ import annotations

import ast

from app.graders.formula import FormulaError, parse
from app.graders.similarity import COSINE_UNAVAILABLE
from app.graders.specs import (
    Grader,
    LabelModelGrader,
    MultiGrader,
    PythonGrader,
    ScoreModelGrader,
    StringCheckGrader,
    TextSimilarityGrader,
)
from app.graders.template import TemplateError, check


class GraderInvalid(ValueError):
    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.field = field


def validate(grader: Grader, prefix: str = "grader", *, in_worker: bool = False) -> None:
    """``in_worker``: the grader runs in the worker (an eval's criteria), where cosine similarity is computed."""
    if isinstance(grader, MultiGrader):
        try:
            parse(grader.calculate_output, set(grader.graders))
        except FormulaError as exc:
            raise GraderInvalid(str(exc), f"{prefix}.calculate_output") from None
        for name, inner in grader.graders.items():
            validate(inner, f"{prefix}.graders.{name}", in_worker=in_worker)
        return
    if isinstance(grader, PythonGrader):
        try:
            tree = ast.parse(grader.source)
        except SyntaxError as exc:
            raise GraderInvalid(
                f"The source does not parse: {exc.msg} (line {exc.lineno}).", f"{prefix}.source"
            ) from None
        defined = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}
        if "grade" not in defined or len(defined["grade"].args.args) != 2:
            raise GraderInvalid("The source must define grade(sample, item) at its top level.", f"{prefix}.source")
        return
    if isinstance(grader, ScoreModelGrader | LabelModelGrader):
        for index, message in enumerate(grader.input):
            try:
                check(message.text())
            except TemplateError as exc:
                raise GraderInvalid(str(exc), f"{prefix}.input.{index}.content") from None
        if isinstance(grader, ScoreModelGrader):
            low, high = grader.bounds()
            if not low < high:
                raise GraderInvalid("range must be [low, high] with low below high.", f"{prefix}.range")
            return
        if len(set(grader.labels)) != len(grader.labels):
            raise GraderInvalid("Each label may appear once in labels.", f"{prefix}.labels")
        unknown = [label for label in grader.passing_labels if label not in grader.labels]
        if unknown:
            raise GraderInvalid(
                f"passing_labels must be among labels; {', '.join(unknown)} is not.", f"{prefix}.passing_labels"
            )
        return
    assert isinstance(grader, (StringCheckGrader, TextSimilarityGrader))
    for name in ("input", "reference"):
        try:
            check(getattr(grader, name))
        except TemplateError as exc:
            raise GraderInvalid(str(exc), f"{prefix}.{name}") from None
    if isinstance(grader, TextSimilarityGrader) and grader.evaluation_metric == "cosine" and not in_worker:
        raise GraderInvalid(COSINE_UNAVAILABLE, f"{prefix}.evaluation_metric")
