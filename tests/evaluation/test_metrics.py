"""The answer scores on hand-made cases whose values are worked out by hand."""

from __future__ import annotations

import math

import pytest

from worker.evaluation.metrics import bleu, exact_match, ngrams, overlap, rouge_l, score, token_f1


def test_exact_match_ignores_case_punctuation_articles_and_spacing() -> None:
    assert exact_match("The  Eiffel Tower!", "eiffel tower") == 1.0
    assert exact_match("Paris", "Lyon") == 0.0
    assert exact_match("北京。", "北京") == 1.0


def test_token_f1() -> None:
    # prediction [cat, sat, on, mat], reference [cat, sat]: precision 2/4, recall 2/2 -> F1 2/3
    assert token_f1("the cat sat on the mat", "the cat sat") == pytest.approx(2 / 3)
    assert token_f1("dog", "cat") == 0.0
    assert token_f1("", "") == 1.0 and token_f1("", "cat") == 0.0
    # CJK characters are tokens: 猫坐 vs 猫坐下 -> precision 1, recall 2/3 -> F1 0.8
    assert token_f1("猫坐", "猫坐下") == pytest.approx(0.8)


def test_bleu() -> None:
    assert bleu("the cat sat on the mat", "The cat sat on the mat.") == pytest.approx(1.0)
    assert bleu("dog barks loudly today", "cat sleeps quietly inside") == pytest.approx(0.0, abs=1e-3)
    # after normalisation: [cat, is, on, mat] vs [cat, is, on, mat, now]: every n-gram precision is 1 and
    # the brevity penalty is exp(1 - 5/4)
    assert bleu("the cat is on the mat", "the cat is on the mat now") == pytest.approx(math.exp(-0.25), abs=1e-4)


def test_rouge_l() -> None:
    # [quick, brown, fox] vs [quick, fox]: LCS 2, precision 2/3, recall 1 -> F 0.8
    assert rouge_l("the quick brown fox", "the quick fox") == pytest.approx(0.8)
    assert rouge_l("abc", "xyz") == 0.0
    assert rouge_l("猫坐在垫子上", "猫在垫子上") == pytest.approx(2 * 1 * 5 / 6 / (1 + 5 / 6))


def test_score_has_every_metric_and_overlap_finds_copied_prompts() -> None:
    assert set(score("a", "a")) == {"exact_match", "f1", "bleu", "rouge_l"}
    seen = ngrams("Summarise the following article about the history of the Roman empire please", 8)
    assert overlap("Summarise the following article about the history of the Roman empire", seen, 8) == 1.0
    assert overlap("Translate this sentence into French for me now", seen, 8) == 0.0
    assert overlap("Add 2 and 2.", ngrams("add 2 and 2", 8), 8) == 1.0  # short prompts count whole


@pytest.mark.parametrize(
    ("answered", "tuned", "expected"),
    [
        (2, 0.9, "Only 2 test prompts were answered: too few"),  # the first hour's 2-prompt report
        (1, 0.9, "Only 1 test prompt was answered: too few"),
        (19, 0.9, "Only 19 test prompts"),
        (20, 0.9, "The tuned model beats both"),
        (40, 0.31, "Fine-tuning did not clearly improve"),
    ],
)
def test_a_verdict_needs_twenty_answered_prompts(answered: int, tuned: float, expected: str) -> None:
    from app.evaluation.service import verdict

    scores = {"base": {"rouge_l": 0.3}, "few_shot": {"rouge_l": 0.3}, "tuned": {"rouge_l": tuned}}
    assert verdict({"sample_size": answered, "scores": scores}).startswith(expected)
