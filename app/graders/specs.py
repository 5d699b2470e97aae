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


class TextBlock(BaseModel):
    """A text part of a message (OpenAI's input_text / output_text content blocks)."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["input_text", "output_text"]
    text: str = TEMPLATE


class GraderMessage(BaseModel):
    """One message of a model grader's prompt; its text may hold templates. Text only: an image or audio block
    is refused with the reason (no judge here reads them)."""

    model_config = ConfigDict(extra="forbid")
    role: Literal["user", "assistant", "system", "developer"]
    content: str | TextBlock | list[TextBlock] = Field(description="Text, or text blocks, with templates.")
    type: Literal["message"] | None = None

    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        blocks = [self.content] if isinstance(self.content, TextBlock) else self.content
        return "\n".join(block.text for block in blocks)


class SamplingParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    max_completions_tokens: int | None = Field(default=None, ge=1, le=8192)
    reasoning_effort: str | None = Field(default=None, max_length=20, description="Accepted; sent on as given.")
    seed: int | None = Field(default=None, ge=0, le=2**31 - 1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)


MODEL = Field(
    min_length=1,
    max_length=200,
    description="A judge an administrator set up (its name, or the model name it serves): Settings → Judges.",
)
MESSAGES = Field(min_length=1, max_length=20, description="The grader's prompt, with templates.")


class ScoreModelGrader(BaseModel):
    """A judge model reads the prompt and answers a number in ``range``; the number is the score."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["score_model"]
    name: str = NAME
    model: str = MODEL
    input: list[GraderMessage] = MESSAGES
    range: list[Annotated[float, Field(ge=-1e9, le=1e9)]] | None = Field(
        default=None, min_length=2, max_length=2, description="[low, high] (default [0, 1])."
    )
    sampling_params: SamplingParams | None = None
    pass_threshold: float | None = Field(default=None, ge=-1e9, le=1e9, description="Used by evals: score ≥ it passes.")

    def bounds(self) -> tuple[float, float]:
        low, high = self.range or (0.0, 1.0)
        return float(low), float(high)


class LabelModelGrader(BaseModel):
    """A judge model picks one of ``labels``; the score is 1.0 when the label is one of ``passing_labels``."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["label_model"]
    name: str = NAME
    model: str = MODEL
    input: list[GraderMessage] = MESSAGES
    labels: list[str] = Field(min_length=2, max_length=50)
    passing_labels: list[str] = Field(min_length=1, max_length=50)


ModelGrader = ScoreModelGrader | LabelModelGrader

LeafGrader = Annotated[
    StringCheckGrader | TextSimilarityGrader | PythonGrader | ScoreModelGrader | LabelModelGrader,
    Field(discriminator="type"),
]


class MultiGrader(BaseModel):
    """Several graders and a formula over their scores (their names are the formula's variables)."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["multi"]
    name: str = NAME
    graders: dict[str, LeafGrader] = Field(min_length=1, max_length=20)
    calculate_output: str = Field(min_length=1, max_length=1000)


Grader = Annotated[
    StringCheckGrader | TextSimilarityGrader | PythonGrader | ScoreModelGrader | LabelModelGrader | MultiGrader,
    Field(discriminator="type"),
]
