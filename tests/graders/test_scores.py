"""Every grader type against scores computed by hand."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import TypeAdapter

from app.graders.checks import GraderInvalid, validate
from app.graders.grade import grade
from app.graders.specs import Grader

GRADER: TypeAdapter[Any] = TypeAdapter(Grader)


def score(spec: dict[str, Any], output: str, item: dict[str, Any] | None = None) -> float:
    return grade(GRADER.validate_python(spec), output_text=output, item=item or {}).score


@pytest.mark.parametrize(
    ("operation", "output", "reference", "expected"),
    [
        ("eq", "Paris", "Paris", 1.0),
        ("eq", "paris", "Paris", 0.0),
        ("ne", "Lyon", "Paris", 1.0),
        ("like", "The capital is Paris.", "Paris", 1.0),
        ("like", "The capital is PARIS.", "Paris", 0.0),
        ("ilike", "The capital is PARIS.", "Paris", 1.0),
    ],
)
def test_string_check(operation: str, output: str, reference: str, expected: float) -> None:
    spec = {
        "type": "string_check",
        "name": "capital",
        "input": "{{ sample.output_text }}",
        "reference": "{{ item.answer }}",
        "operation": operation,
    }
    assert score(spec, output, {"answer": reference}) == expected


def test_templates_read_the_items_fields_and_the_answers_json() -> None:
    spec = {
        "type": "string_check",
        "name": "city",
        "input": "{{ sample.output_json.city }}",
        "reference": "{{ item.expected.city }}",
        "operation": "eq",
    }
    item = {"expected": {"city": "Paris"}}
    assert score(spec, json.dumps({"city": "Paris", "country": "FR"}), item) == 1.0
    assert score(spec, json.dumps({"city": "Lyon"}), item) == 0.0
    missing = grade(GRADER.validate_python(spec), output_text="not json", item=item)
    assert missing.score == 0.0 and missing.errors["invalid_variable_error"]
    assert "sample has no 'city'" in missing.details["invalid_variable_error"]


# The figures are worked out by hand in the comments (the libraries must agree with them).
@pytest.mark.parametrize(
    ("metric", "output", "reference", "expected"),
    [
        # LCS(kitten, sitting) = 'ittn' (4): Indel distance 6 + 7 - 2*4 = 5, similarity 1 - 5/13
        ("fuzzy_match", "kitten", "sitting", 1 - 5 / 13),
        ("bleu", "the cat sat on the mat", "the cat sat on the mat", 1.0),
        ("bleu", "dogs bark", "the cat sat on the mat", 0.0),
        # n-grams (1-4) of each: {the, cat, the cat} vs {the, dog, the dog}: 1 match of 3 either way
        ("gleu", "the cat", "the dog", 1 / 3),
        # 6 unigram matches in one chunk: Fmean 1, penalty 0.5 * (1/6)^3
        ("meteor", "the cat sat on the mat", "the cat sat on the mat", 1 - 0.5 * (1 / 6) ** 3),
        # unigrams: 2 of 3 match both ways
        ("rouge_1", "the cat sat", "the cat ran", 2 / 3),
        # bigrams {the cat, cat sat} vs {the cat, cat ran}: 1 of 2
        ("rouge_2", "the cat sat", "the cat ran", 0.5),
        ("rouge_3", "the cat sat", "the cat ran", 0.0),
        # longest common subsequence 'the cat': 2 of 3
        ("rouge_l", "the cat sat", "the cat ran", 2 / 3),
    ],
)
def test_text_similarity(metric: str, output: str, reference: str, expected: float) -> None:
    spec = {
        "type": "text_similarity",
        "name": metric,
        "input": "{{ sample.output_text }}",
        "reference": reference,
        "evaluation_metric": metric,
    }
    assert score(spec, output) == pytest.approx(expected, abs=1e-6)


def test_multi_combines_its_graders_with_the_formula() -> None:
    spec = {
        "type": "multi",
        "name": "both",
        "graders": {
            "exact": {
                "type": "string_check",
                "name": "exact",
                "input": "{{ sample.output_text }}",
                "reference": "the cat sat",
                "operation": "eq",
            },
            "overlap": {
                "type": "text_similarity",
                "name": "overlap",
                "input": "{{ sample.output_text }}",
                "reference": "the cat ran",
                "evaluation_metric": "rouge_2",
            },
        },
        "calculate_output": "0.25 * exact + 0.75 * max(overlap, 0.2)",
    }
    result = grade(GRADER.validate_python(spec), output_text="the cat sat", item={})
    assert result.sub_scores == {"exact": 1.0, "overlap": 0.5}
    assert result.score == pytest.approx(0.25 * 1 + 0.75 * 0.5)


def test_python_grader_scores_in_its_sandbox() -> None:
    source = (
        "import json\n"
        "def grade(sample, item):\n"
        "    answer = sample['output_json'] or {}\n"
        "    return sum(answer.get(k) == v for k, v in item['expected'].items()) / len(item['expected'])\n"
    )
    spec = {"type": "python", "name": "fields", "source": source}
    item = {"expected": {"first": "give", "kind": "list"}}
    assert score(spec, '{"first": "give", "kind": "list"}', item) == 1.0
    assert score(spec, '{"first": "give", "kind": "ask"}', item) == 0.5


@pytest.mark.parametrize(
    ("spec", "field", "words"),
    [
        (
            {"type": "string_check", "name": "x", "input": "{{ output }}", "reference": "a", "operation": "eq"},
            "grader.input",
            "item.…",
        ),
        (
            {"type": "python", "name": "x", "source": "def grade(sample):\n    return 1"},
            "grader.source",
            "grade(sample, item)",
        ),
        ({"type": "python", "name": "x", "source": "def grade(:"}, "grader.source", "line 1"),
        (
            {
                "type": "multi",
                "name": "x",
                "calculate_output": "a + b",
                "graders": {
                    "a": {"type": "string_check", "name": "a", "input": "x", "reference": "x", "operation": "eq"}
                },
            },
            "grader.calculate_output",
            "'b'",
        ),
        (
            {
                "type": "multi",
                "name": "x",
                "calculate_output": "__import__('os')",
                "graders": {
                    "a": {"type": "string_check", "name": "a", "input": "x", "reference": "x", "operation": "eq"}
                },
            },
            "grader.calculate_output",
            "may call min",
        ),
        (
            {"type": "text_similarity", "name": "x", "input": "a", "reference": "b", "evaluation_metric": "cosine"},
            "grader.evaluation_metric",
            "cosine",
        ),
    ],
)
def test_a_bad_grader_is_refused_naming_the_field(spec: dict[str, Any], field: str, words: str) -> None:
    with pytest.raises(GraderInvalid) as refused:
        validate(GRADER.validate_python(spec))
    assert refused.value.field == field and words in str(refused.value)


SCORE_MODEL = {
    "type": "score_model",
    "name": "q",
    "model": "judge",
    "input": [{"role": "user", "content": "Rate: {{ sample.output_text }} (expected {{ item.answer }})"}],
    "range": [1, 5],
}
LABEL_MODEL = {
    "type": "label_model",
    "name": "l",
    "model": "judge",
    "input": [{"role": "user", "content": "{{ sample.output_text }}"}],
    "labels": ["correct", "partly", "wrong"],
    "passing_labels": ["correct", "partly"],
}


@pytest.mark.parametrize(
    ("spec", "reply", "expected", "flag"),
    [
        (SCORE_MODEL, '{"result": 4, "reason": "close"}', 4.0, None),
        (SCORE_MODEL, 'Sure! ```json\n{"result": 2.5}\n```', 2.5, None),
        (SCORE_MODEL, "3", 3.0, None),  # a bare number is an answer too
        (SCORE_MODEL, '{"result": 7}', 0.0, "model_grader_parse_error"),  # outside [1, 5]
        (SCORE_MODEL, '{"result": true}', 0.0, "model_grader_parse_error"),
        (SCORE_MODEL, "I would say good.", 0.0, "model_grader_parse_error"),
        (LABEL_MODEL, '{"label": "Partly"}', 1.0, None),  # a passing label, whatever its case
        (LABEL_MODEL, '{"label": "wrong"}', 0.0, None),
        (LABEL_MODEL, "correct.", 1.0, None),
        (LABEL_MODEL, '{"label": "maybe"}', 0.0, "model_grader_parse_error"),
    ],
)
def test_model_graders_score_the_judges_reply(
    spec: dict[str, Any], reply: str, expected: float, flag: str | None
) -> None:
    asked: list[tuple[str, list[dict[str, str]], dict[str, Any]]] = []

    def ask(model: str, messages: list[dict[str, str]], sampling: dict[str, Any]) -> str:
        asked.append((model, messages, sampling))
        return reply

    result = grade(GRADER.validate_python(spec), output_text="Paris", item={"answer": "Paris"}, ask=ask)
    assert result.score == expected
    assert [f for f, on in result.errors.items() if on] == ([flag] if flag else [])
    model, messages, sampling = asked[0]
    assert model == "judge" and sampling["temperature"] == 0
    assert messages[0]["content"].startswith(("Rate: Paris (expected Paris)", "Paris"))
    assert messages[-1]["role"] == "system" and (
        "from 1 to 5" in messages[-1]["content"] or "partly" in messages[-1]["content"]
    )


def test_a_model_grader_with_no_judge_or_a_failing_one_scores_nothing() -> None:
    from app.core.chat import ChatError

    def down(*_args: Any) -> str:
        raise ChatError("unreachable", "ConnectError: refused")

    spec = GRADER.validate_python(SCORE_MODEL)
    failed = grade(spec, output_text="x", item={"answer": "y"}, ask=down)
    assert failed.score == 0 and failed.errors["model_grader_server_error"]
    assert "unreachable" in failed.details["model_grader_server_error"]
    assert grade(spec, output_text="x", item={"answer": "y"}).errors["model_grader_server_error"]
    missing = grade(spec, output_text="x", item={}, ask=down)  # the template names a field the item lacks
    assert missing.errors["invalid_variable_error"]


def test_cosine_compares_meaning_with_the_workers_embedding_model() -> None:
    from worker.cleaning.embed import Embedder

    embed = Embedder()
    spec = {
        "type": "text_similarity",
        "name": "meaning",
        "input": "{{ sample.output_text }}",
        "reference": "{{ item.answer }}",
        "evaluation_metric": "cosine",
    }
    grader = GRADER.validate_python(spec)

    def cosine(output: str, answer: str) -> float:
        return grade(grader, output_text=output, item={"answer": answer}, embed=embed).score

    assert cosine("The cat sat on the mat.", "The cat sat on the mat.") == pytest.approx(1.0, abs=1e-5)
    close = cosine("A kitten is resting on the rug.", "The cat sat on the mat.")
    far = cosine("Quarterly revenue rose by four percent.", "The cat sat on the mat.")
    assert 0 <= far < close < 1
    # the web process loads no embedding model: the sample says why instead of scoring
    refused = grade(grader, output_text="x", item={"answer": "y"})
    assert refused.errors["other_error"] and "only the worker" in refused.details["other_error"]
