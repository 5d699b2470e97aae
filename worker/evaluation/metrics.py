"""Scores of a generated answer against the reference: exact match, token F1, BLEU (sacrebleu) and ROUGE-L
(rouge-score). Text is normalised the way SQuAD's scorer does (case, punctuation, articles, spaces); Chinese,
Japanese and Korean characters count one token each, so the scores mean the same in those languages."""

from __future__ import annotations

import re
import string
import unicodedata
from collections import Counter
from typing import Any

_CJK = re.compile(r"([\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff])")
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = set(string.punctuation) | {"，", "。", "！", "？", "；", "：", "、", "“", "”", "‘", "’", "（", "）"}


def normalise(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).lower()
    text = "".join(" " if ch in _PUNCTUATION else ch for ch in text)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def tokens(text: str) -> list[str]:
    return _CJK.sub(r" \1 ", normalise(text)).split()


def exact_match(prediction: str, reference: str) -> float:
    return float(normalise(prediction) == normalise(reference))


def token_f1(prediction: str, reference: str) -> float:
    predicted, expected = tokens(prediction), tokens(reference)
    if not predicted or not expected:
        return float(predicted == expected)
    common = sum((Counter(predicted) & Counter(expected)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(predicted), common / len(expected)
    return 2 * precision * recall / (precision + recall)


def bleu(prediction: str, reference: str) -> float:
    """Sentence BLEU in 0..1 (sacrebleu with exponential smoothing) on the normalised texts, split into the
    same tokens as the other scores."""
    from sacrebleu.metrics.bleu import BLEU

    scorer = BLEU(tokenize="none", effective_order=True)
    return scorer.sentence_score(" ".join(tokens(prediction)), [" ".join(tokens(reference))]).score / 100.0


class _Tokenizer:
    """rouge-score's own tokeniser keeps only ASCII letters and digits; ours keeps every script."""

    def tokenize(self, text: str) -> list[str]:
        return tokens(text)


_ROUGE: Any = None


def rouge_l(prediction: str, reference: str) -> float:
    global _ROUGE
    if _ROUGE is None:
        from rouge_score import rouge_scorer

        _ROUGE = rouge_scorer.RougeScorer(["rougeL"], tokenizer=_Tokenizer())
    return float(_ROUGE.score(reference, prediction)["rougeL"].fmeasure)


def score(prediction: str, reference: str) -> dict[str, float]:
    return {
        "exact_match": exact_match(prediction, reference),
        "f1": token_f1(prediction, reference),
        "bleu": bleu(prediction, reference),
        "rouge_l": rouge_l(prediction, reference),
    }


def ngrams(text: str, n: int) -> set[tuple[str, ...]]:
    """The word n-grams of a text; a text shorter than n words is one n-gram of itself."""
    words = tokens(text)
    if 0 < len(words) < n:
        return {tuple(words)}
    return {tuple(words[i : i + n]) for i in range(len(words) - n + 1)}


def overlap(text: str, seen: set[tuple[str, ...]], n: int) -> float:
    """Share of the text's n-grams found in ``seen``."""
    grams = ngrams(text, n)
    return len(grams & seen) / len(grams) if grams else 0.0
