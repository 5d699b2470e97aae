"""Grader specifications as OpenAI's API writes them (the official client's typed objects parse ours)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

NAME = Field(min_length=1, max_length=100, description="Shown with the grader's score.")
TEMPLATE = Field(max_length=20_000, description="Text with {{ item.field }} / {{ sample.output_text }} templates.")


class StringCheckGrader(BaseModel):
    """1.0 when the check holds, else 0.0: eq and ne compare exactly; like is 'input contains reference'
    (case-sensitive), ilike the same ignoring case."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["string_check"]
    name: str = NAME
    input: str = TEMPLATE
    reference: str = TEMPLATE
    operation: Literal["eq", "ne", "like", "ilike"]


SimilarityMetric = Literal[
    "fuzzy_match",
    "bleu",
    "gleu",
    "meteor",
    "cosine",
    "rouge_1",
    "rouge_2",
    "rouge_3",
    "rouge_4",
    "rouge_5",
    "rouge_l",
]


class TextSimilarityGrader(BaseModel):
    """A similarity in [0, 1] between the input and the reference (app/graders/similarity.py)."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["text_similarity"]
    name: str = NAME
    input: str = TEMPLATE
    reference: str = TEMPLATE
    evaluation_metric: SimilarityMetric
    pass_threshold: float | None = Field(default=None, ge=0, le=1, description="Used by evals: score ≥ it passes.")


class PythonGrader(BaseModel):
    """The user's ``def grade(sample, item) -> float``, run in a sandbox child (no network, no files outside
    its own directory, CPU, memory and wall-clock limits)."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["python"]
    name: str = NAME
    source: str = Field(min_length=1, max_length=100_000)
    image_tag: str | None = Field(default=None, max_length=100, description="Accepted for OpenAI's scripts; unused.")
    pass_threshold: float | None = Field(default=None, ge=-1e9, le=1e9, description="Used by evals: score ≥ it passes.")


LeafGrader = Annotated[StringCheckGrader | TextSimilarityGrader | PythonGrader, Field(discriminator="type")]


class MultiGrader(BaseModel):
    """Several graders and a formula over their scores (their names are the formula's variables)."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["multi"]
    name: str = NAME
    graders: dict[str, LeafGrader] = Field(min_length=1, max_length=20)
    calculate_output: str = Field(min_length=1, max_length=1000)


Grader = Annotated[StringCheckGrader | TextSimilarityGrader | PythonGrader | MultiGrader, Field(discriminator="type")]
