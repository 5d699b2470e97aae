"""A cleaning recipe: the operations, their parameters (each a pydantic model the API publishes and the
builder page draws), the default recipe, and the validation that fills every parameter in."""

from __future__ import annotations

import re
from typing import Any, Literal

import regex
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from app.core.errors import InvalidInput
from app.core.i18n import N_, _
from app.core.validation import describe_error

OP_LABELS = {
    "normalize": N_("Normalise text (NFKC, whitespace, control characters)"),
    "exact_dedup": N_("Exact duplicates (after normalising)"),
    "near_dedup": N_("Near duplicates (MinHash LSH)"),
    "pii": N_("Personal data and secrets"),
    "injection": N_("Prompt injection, jailbreaks, scripts and SQL"),
    "profanity": N_("Profanity and toxicity"),
    "rules": N_("Rules: length, keywords, regex, turn structure"),
    "quality": N_("Quality heuristics: repetition, refusals, empty answers"),
    "contamination": N_("Contamination: train records that overlap the test split or an eval set"),
    "semantic_dedup": N_("Semantic duplicates (sentence embeddings, all-MiniLM-L6-v2)"),
    "judge": N_("LLM judge: relevance, clarity, completeness and accuracy, 1–5"),
}


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid")


class NormalizeParams(_Params):
    nfkc: bool = Field(
        True, description=N_("Fold compatibility forms (full-width letters and digits, ligatures) with NFKC.")
    )
    keep_cjk_punctuation: bool = Field(
        True,
        description=N_("Keep Chinese and Japanese full-width punctuation (，。？！：；（）…) as written under NFKC."),
    )
    whitespace: bool = Field(True, description=N_("Collapse runs of spaces and tabs; trim each line's end."))
    control: bool = Field(True, description=N_("Remove control characters other than newline and tab."))


class ExactDedupParams(_Params):
    fields: Literal["all", "prompt"] = Field("all", description=N_("Compare whole records, or only the prompts."))


class NearDedupParams(_Params):
    threshold: float = Field(0.8, ge=0.5, le=0.99, description=N_("Estimated Jaccard similarity that counts."))
    shingle: int = Field(3, ge=1, le=10, description=N_("Words per shingle (characters for Chinese text)."))
    num_perm: int = Field(128, ge=32, le=512, description=N_("MinHash permutations: more is finer, slower."))
    fields: Literal["all", "prompt"] = "all"
    keep: Literal["first"] = Field("first", description=N_("Which record of a cluster stays: the earliest."))


PiiKind = Literal["email", "phone", "credit_card", "iban", "ip", "cn_id", "secret", "url_credentials"]
Category = Literal["injection", "jailbreak", "prompt_extraction", "script", "sql"]


def _all_pii() -> list[PiiKind]:
    return ["email", "phone", "credit_card", "iban", "ip", "cn_id", "secret", "url_credentials"]


def _all_categories() -> list[Category]:
    return ["injection", "jailbreak", "prompt_extraction", "script", "sql"]


class PiiParams(_Params):
    kinds: list[PiiKind] = Field(default_factory=_all_pii)
    names: bool = Field(
        False, description=N_("Also find people's names with the NER model the workers have (REFINERY_NER_MODEL).")
    )
    style: Literal["placeholder", "pseudonym", "drop"] = Field(
        "placeholder", description=N_("<EMAIL>…, a consistent stand-in per value, or drop the record.")
    )


class InjectionParams(_Params):
    categories: list[Category] = Field(default_factory=_all_categories)
    detector: bool = Field(
        True,
        description=N_(
            "Also score each sentence of the prompts with the learned detector (English and Chinese), which reads "
            "other wordings than the fixed patterns."
        ),
    )
    threshold: float = Field(
        0.6, ge=0.3, le=0.99, description=N_("The detector's probability of an attack at which a record drops.")
    )


class ProfanityParams(_Params):
    threshold: float = Field(0.9, ge=0.5, le=1.0, description=N_("Model probability of offensive text that drops."))
    word_lists: bool = Field(True, description=N_("Also drop records with a listed slur or obscenity (EN, ZH)."))


class RulesParams(_Params):
    min_words: int = Field(1, ge=0, le=1_000_000, description=N_("Words (Chinese characters count one each)."))
    max_words: int = Field(100_000, ge=1, le=10_000_000)
    min_tokens: int = Field(
        0, ge=0, le=10_000_000, description=N_("Tokens the base model sees (its tokenizer and chat template); 0: none.")
    )
    max_tokens: int = Field(0, ge=0, le=10_000_000, description=N_("0: no bound; needs the dataset's base model."))
    include: list[str] = Field(default_factory=list, description=N_("Keep only records with one of these."))
    exclude: list[str] = Field(default_factory=list, description=N_("Drop records with any of these."))
    regex_exclude: str = Field("", max_length=500, description=N_("Drop records matching this expression."))
    require_answer: bool = Field(True, description=N_("Chat records must end with a non-empty assistant turn."))
    languages: list[str] = Field(
        default_factory=list,
        max_length=20,
        description=N_("Keep only these languages (ISO codes such as en, zh; detected with langdetect)."),
    )


class QualityParams(_Params):
    max_repetition: float = Field(0.5, ge=0.1, le=1.0, description=N_("Share of repeated 3-word sequences."))
    refusals: bool = Field(True, description=N_("Drop answers that are refusal boilerplate."))
    min_answer_ratio: float = Field(
        0.0, ge=0, le=1, description=N_("Drop when the answer is shorter than this share of a long question.")
    )


class ContaminationParams(_Params):
    against: Literal["test", "validation_and_test", "version"] = Field(
        "test", description=N_("This version's test split, its validation and test splits, or another version.")
    )
    version_id: str = Field("", max_length=64, description=N_("The eval set's version, when against another one."))
    ngram: int = Field(13, ge=5, le=50, description=N_("Words in a shared run that counts as contamination."))


class SemanticDedupParams(_Params):
    threshold: float = Field(
        0.85, ge=0.5, le=0.999, description=N_("Cosine similarity of the sentence embeddings that counts.")
    )
    fields: Literal["all", "prompt"] = Field("prompt", description=N_("Compare whole records, or only the prompts."))
    keep: Literal["first"] = Field("first", description=N_("Which record of a cluster stays: the earliest."))
    same_answer: bool = Field(
        False,
        description=N_(
            "Count only records whose answers have the same words: a reworded question with the same answer, "
            "not two templated questions with different answers."
        ),
    )
    max_records: int = Field(
        0,
        ge=0,
        le=100_000_000,
        description=N_(
            "Run only on datasets of at most this many records (0: any size); a larger one skips the step and "
            "the review shows what running it would cost."
        ),
    )


class JudgeParams(_Params):
    judge_id: str = Field("", max_length=64, description=N_("The judge that scores each record (see Judges)."))
    threshold: float = Field(3.0, ge=1, le=5, description=N_("Drop records whose mean score is below this."))


PARAMS: dict[str, type[_Params]] = {
    "normalize": NormalizeParams,
    "exact_dedup": ExactDedupParams,
    "near_dedup": NearDedupParams,
    "semantic_dedup": SemanticDedupParams,
    "pii": PiiParams,
    "injection": InjectionParams,
    "profanity": ProfanityParams,
    "rules": RulesParams,
    "quality": QualityParams,
    "judge": JudgeParams,
    "contamination": ContaminationParams,
}


class Step(BaseModel):
    model_config = ConfigDict(extra="forbid")
    op: Literal[
        "normalize",
        "exact_dedup",
        "near_dedup",
        "semantic_dedup",
        "pii",
        "injection",
        "profanity",
        "rules",
        "quality",
        "judge",
        "contamination",
    ] = Field(description=N_("The operation."))
    params: dict[str, Any] = Field(default_factory=dict, description=N_("Its parameters; defaults where left out."))


# the default recipe's semantic dedup runs on datasets up to this size: all-MiniLM-L6-v2 embeds about 70
# records a second on two CPU cores (bench/results/cleaning_quality.md), so this costs at most about two minutes
SEMANTIC_DEFAULT_MAX = 10_000

DEFAULT_RECIPE: list[dict[str, Any]] = [
    {"op": "normalize", "params": {}},
    {"op": "exact_dedup", "params": {}},
    {"op": "near_dedup", "params": {}},
    {"op": "pii", "params": {}},
    {"op": "injection", "params": {}},
    {"op": "profanity", "params": {}},
    {"op": "quality", "params": {}},
    # paraphrases (a question reworded, the same answer), where the embedding pass is cheap: see SEMANTIC_DEFAULT_MAX
    {"op": "semantic_dedup", "params": {"fields": "all", "same_answer": True, "max_records": SEMANTIC_DEFAULT_MAX}},
]


def needs_tokens(steps: list[dict[str, Any]]) -> bool:
    """Whether a recipe bounds length in tokens (so the run needs the dataset's base model)."""
    return any(s["op"] == "rules" and (s["params"].get("min_tokens") or s["params"].get("max_tokens")) for s in steps)


def needs_names(steps: list[dict[str, Any]]) -> bool:
    """Whether a recipe looks for people's names (so the run needs the NER model)."""
    return any(s["op"] == "pii" and s["params"].get("names") for s in steps)


def validate_steps(raw: Any) -> list[dict[str, Any]]:
    """Steps with every parameter filled in; InvalidInput naming the step and the field."""
    if not isinstance(raw, list) or not raw or len(raw) > 30:
        raise InvalidInput(_("A recipe is a list of 1 to 30 steps."), field="steps")
    out = []
    for index, item in enumerate(raw):
        try:
            step = Step.model_validate(item)
            params = PARAMS[step.op].model_validate(step.params)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise InvalidInput(
                _("Step %(n)s: %(error)s", n=index + 1, error=describe_error(dict(first))),
                field=f"steps.{index}.{where}",
            ) from exc
        if step.op == "rules" and isinstance(params, RulesParams) and params.regex_exclude:
            try:
                regex.compile(params.regex_exclude)  # the engine the cleaning runs it with (time-limited)
            except (regex.error, re.error) as exc:
                raise InvalidInput(
                    _("Step %(n)s: the regular expression is not valid (%(error)s).", n=index + 1, error=str(exc)),
                    field=f"steps.{index}.regex_exclude",
                ) from exc
        if isinstance(params, RulesParams):
            for unit, low, high in (
                ("words", params.min_words, params.max_words),
                ("tokens", params.min_tokens, params.max_tokens or params.min_tokens),
            ):
                if low > high:
                    raise InvalidInput(
                        _("Step %(n)s: the least length is above the greatest.", n=index + 1),
                        field=f"steps.{index}.min_{unit}",
                    )
            params.languages = sorted({code.strip().casefold() for code in params.languages if code.strip()})
        if isinstance(params, ContaminationParams) and (params.against == "version") != bool(params.version_id):
            raise InvalidInput(
                _(
                    "Step %(n)s: name the eval set's version exactly when checking against another version.",
                    n=index + 1,
                ),
                field=f"steps.{index}.version_id",
            )
        if isinstance(params, JudgeParams) and not params.judge_id:
            raise InvalidInput(
                _("Step %(n)s: pick the judge that scores the records.", n=index + 1), field=f"steps.{index}.judge_id"
            )
        out.append({"op": step.op, "params": params.model_dump(mode="json")})
    return out
