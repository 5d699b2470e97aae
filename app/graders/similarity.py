"""text_similarity's metrics, each in [0, 1], from the libraries the field uses (no hand-written metric):

* fuzzy_match: rapidfuzz's normalised Indel similarity (``fuzz.ratio`` / 100);
* bleu: sacrebleu's sentence BLEU (with its default exponential smoothing) / 100;
* gleu: NLTK's sentence GLEU (Google-BLEU, n-grams 1 to 4) on whitespace tokens;
* meteor: NLTK's METEOR on lower-cased whitespace tokens, with exact and Porter-stem matching — its WordNet
  synonym stage is off, as WordNet is not shipped (nothing is downloaded at run time);
* rouge_1 … rouge_5, rouge_l: Google's rouge-score F-measure, with its stemmer off.

* cosine: the cosine of the two texts' sentence embeddings (all-MiniLM-L6-v2, mean-pooled, as the worker's
  semantic dedup embeds), clipped at 0. It needs the embedding model, which the worker loads and the web
  process does not: eval runs compute it; ``/graders/run`` refuses it with a message saying so."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

COSINE_UNAVAILABLE = (
    "evaluation_metric 'cosine' needs the sentence-embedding model, which only the worker loads: use it in an "
    "eval's testing criteria or a grader attached to a job's evaluation (both are graded by the worker), or pick "
    "fuzzy_match, bleu, gleu, meteor or a rouge metric here"
)

# (texts) -> their unit-length embeddings, one row per text (worker/cleaning/embed.py's Embedder)
Embed = Callable[[list[str]], Any]


class MetricUnavailable(ValueError):
    """A metric this process cannot compute."""


class _NoWordNet:
    """Stands in for WordNet in NLTK's METEOR: no synonyms, so only exact and stem matches count."""

    def synsets(self, *_args: Any, **_kwargs: Any) -> list[Any]:
        return []


def similarity(metric: str, text: str, reference: str, embed: Embed | None = None) -> float:
    if metric == "fuzzy_match":
        from rapidfuzz import fuzz

        return float(fuzz.ratio(text, reference)) / 100
    if metric == "bleu":
        import sacrebleu

        return min(1.0, float(sacrebleu.sentence_bleu(text, [reference]).score) / 100)
    if metric == "gleu":
        from nltk.translate.gleu_score import sentence_gleu

        return float(sentence_gleu([reference.split()], text.split()))
    if metric == "meteor":
        from nltk.translate.meteor_score import meteor_score

        return float(meteor_score([reference.lower().split()], text.lower().split(), wordnet=_NoWordNet()))
    if metric.startswith("rouge_"):
        from rouge_score import rouge_scorer

        kind = "rougeL" if metric == "rouge_l" else f"rouge{metric.removeprefix('rouge_')}"
        return float(rouge_scorer.RougeScorer([kind]).score(reference, text)[kind].fmeasure)
    if metric == "cosine":
        if embed is None:
            raise MetricUnavailable(COSINE_UNAVAILABLE)
        first, second = embed([text, reference])
        return max(0.0, min(1.0, float(sum(float(a) * float(b) for a, b in zip(first, second, strict=True)))))
    raise MetricUnavailable(f"Unknown evaluation_metric '{metric}'.")
