"""Cleaning operations: a recipe is an ordered list of steps; each record passes through them in order and
every step that drops or changes it leaves a decision with its reason and evidence. A dropped record goes no
further, so later steps (and the dedup indexes) see only what was kept so far."""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from app.cleaning import pii
from app.cleaning.patterns import EN_WORDS, INJECTION_PATTERNS, REFUSALS, ZH_WORDS
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
    "contamination": N_("Contamination: train records that overlap the test set"),
}


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid")


class NormalizeParams(_Params):
    nfkc: bool = True
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
    style: Literal["placeholder", "pseudonym", "drop"] = Field(
        "placeholder", description=N_("<EMAIL>…, a consistent stand-in per value, or drop the record.")
    )


class InjectionParams(_Params):
    categories: list[Category] = Field(default_factory=_all_categories)


class ProfanityParams(_Params):
    threshold: float = Field(0.9, ge=0.5, le=1.0, description=N_("Model probability of offensive text that drops."))
    word_lists: bool = Field(True, description=N_("Also drop records with a listed slur or obscenity (EN, ZH)."))


class RulesParams(_Params):
    min_words: int = Field(1, ge=0, le=1_000_000, description=N_("Words (Chinese characters count one each)."))
    max_words: int = Field(100_000, ge=1, le=10_000_000)
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


PARAMS: dict[str, type[_Params]] = {
    "normalize": NormalizeParams,
    "exact_dedup": ExactDedupParams,
    "near_dedup": NearDedupParams,
    "pii": PiiParams,
    "injection": InjectionParams,
    "profanity": ProfanityParams,
    "rules": RulesParams,
    "quality": QualityParams,
    "contamination": ContaminationParams,
}


class Step(BaseModel):
    model_config = ConfigDict(extra="forbid")
    op: Literal[
        "normalize", "exact_dedup", "near_dedup", "pii", "injection", "profanity", "rules", "quality", "contamination"
    ] = Field(description=N_("The operation."))
    params: dict[str, Any] = Field(default_factory=dict, description=N_("Its parameters; defaults where left out."))


DEFAULT_RECIPE: list[dict[str, Any]] = [
    {"op": "normalize", "params": {}},
    {"op": "exact_dedup", "params": {}},
    {"op": "near_dedup", "params": {}},
    {"op": "pii", "params": {}},
    {"op": "injection", "params": {}},
    {"op": "profanity", "params": {}},
    {"op": "quality", "params": {}},
]


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
                re.compile(params.regex_exclude)
            except re.error as exc:
                raise InvalidInput(
                    _("Step %(n)s: the regular expression is not valid (%(error)s).", n=index + 1, error=str(exc)),
                    field=f"steps.{index}.regex_exclude",
                ) from exc
        if isinstance(params, RulesParams):
            params.languages = sorted({code.strip().casefold() for code in params.languages if code.strip()})
        if isinstance(params, ContaminationParams) and (params.against == "version") != bool(params.version_id):
            raise InvalidInput(
                _(
                    "Step %(n)s: name the eval set's version exactly when checking against another version.",
                    n=index + 1,
                ),
                field=f"steps.{index}.version_id",
            )
        out.append({"op": step.op, "params": params.model_dump(mode="json")})
    return out


# --- the text inside a record ----------------------------------------------------------------------------


def texts(data: dict[str, Any], *, prompt_only: bool = False) -> Iterator[str]:
    """Every string a person wrote in the record (message contents, raw text), in order."""
    if isinstance(data.get("text"), str):
        yield data["text"]
    for key in ("messages", "prompt", "chosen", "rejected"):
        for message in data.get(key) or []:
            if prompt_only and (key in ("chosen", "rejected") or message.get("role") == "assistant"):
                continue
            if isinstance(message, dict) and isinstance(message.get("content"), str):
                yield message["content"]


def map_texts(data: dict[str, Any], change: Callable[[str], str]) -> dict[str, Any]:
    out = dict(data)
    if isinstance(out.get("text"), str):
        out["text"] = change(out["text"])
    for key in ("messages", "prompt", "chosen", "rejected"):
        if isinstance(out.get(key), list):
            out[key] = [
                {**m, "content": change(m["content"])}
                if isinstance(m, dict) and isinstance(m.get("content"), str)
                else m
                for m in out[key]
            ]
    return out


def joined(data: dict[str, Any], *, prompt_only: bool = False) -> str:
    return "\n".join(texts(data, prompt_only=prompt_only))


def answer_of(data: dict[str, Any]) -> str | None:
    messages = data.get("messages") or data.get("chosen")
    if isinstance(messages, list) and messages and isinstance(messages[-1], dict):
        last = messages[-1]
        return str(last.get("content", "")) if last.get("role") == "assistant" else None
    return None


WORD = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]|[^\W_]+", re.UNICODE)


def words(text: str) -> list[str]:
    return WORD.findall(text.casefold())


# --- normalisation ----------------------------------------------------------------------------------------

CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u200b-\u200f\u2028\u2029\u202a-\u202e\u2060-\u2064\ufeff]")
SPACES = re.compile(r"[ \t\u00a0\u3000]+")


def normalize_text(text: str, params: NormalizeParams) -> str:
    if params.nfkc:
        text = unicodedata.normalize("NFKC", text)
    if params.control:
        text = CONTROL.sub("", text.replace("\r\n", "\n").replace("\r", "\n"))
    if params.whitespace:
        text = "\n".join(SPACES.sub(" ", line).rstrip() for line in text.split("\n")).strip()
    return text


def dedup_key(data: dict[str, Any], fields: str) -> str:
    text = joined(data, prompt_only=fields == "prompt")
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def shingles(text: str, size: int) -> list[str]:
    tokens = words(text)
    if len(tokens) <= size:
        return [" ".join(tokens)] if tokens else [""]
    return [" ".join(tokens[i : i + size]) for i in range(len(tokens) - size + 1)]


def repetition(text: str) -> float:
    grams = shingles(text, 3)
    if len(grams) < 8:
        return 0.0
    return 1 - len(set(grams)) / len(grams)


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


class Cleaner:
    """Applies a recipe record by record, holding the dedup indexes between records."""

    def __init__(
        self, steps: list[dict[str, Any]], *, salt: str = "", eval_sets: dict[int, dict[int, str]] | None = None
    ) -> None:
        self.steps = [(s["op"], PARAMS[s["op"]].model_validate(s["params"])) for s in steps]
        self.salt = salt
        # per contamination step: hash of every n-gram of the eval records → the first record that has it
        self.eval_sets = eval_sets or {}
        self._splits: dict[str, str] = {}
        self._exact: dict[int, dict[str, str]] = {}
        self._lsh: dict[int, Any] = {}
        # per near-dedup step: (record id, MinHash, preview) of every record kept so far, by LSH key
        self._kept: dict[int, list[tuple[str, Any, str]]] = {}
        self._profanity_model: Callable[[list[str]], Any] | None = None
        self._scores: dict[str, float] = {}

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
            live = [k for k, outcome in enumerate(outcomes) if outcome.data is not None]
            if op == "profanity":
                self._score_batch([joined(outcomes[k].data or {}) for k in live], [records[k][0] for k in live])
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
        digest = hashlib.blake2b(key.encode(), digest_size=16).hexdigest()
        if digest in seen:
            return Decision(i, "exact_dedup", "drop", "duplicate", {"duplicate_of": seen[digest]}), data
        seen[digest] = rid
        return None, data

    def _near_dedup(self, i: int, rid: str, kind: str, data: dict[str, Any], p: NearDedupParams) -> Any:
        from rensa import RMinHash, RMinHashLSH

        if i not in self._lsh:
            bands = next(b for b in (32, 16, 8, 4) if p.num_perm % b == 0 and p.num_perm // b >= 4)
            self._lsh[i] = RMinHashLSH(threshold=p.threshold, num_perm=p.num_perm, num_bands=bands)
            self._kept[i] = []
        text = joined(data, prompt_only=p.fields == "prompt")
        minhash = RMinHash(num_perm=p.num_perm, seed=1)
        minhash.update(shingles(text, p.shingle))
        kept = self._kept[i]
        best, similarity = -1, 0.0
        for key in self._lsh[i].query(minhash):
            score = minhash.jaccard(kept[key][1])
            if score >= p.threshold and score > similarity:
                best, similarity = key, score
        if best >= 0:
            original, _hash, preview = kept[best]
            evidence = {"duplicate_of": original, "similarity": round(similarity, 3), "kept_text": preview}
            return Decision(i, "near_dedup", "drop", "near_duplicate", evidence), data
        self._lsh[i].insert(len(kept), minhash)
        kept.append((rid, minhash, text[:1000]))
        return None, data

    def _pii(self, i: int, rid: str, kind: str, data: dict[str, Any], p: PiiParams) -> Any:
        kinds = frozenset(p.kinds)
        spans: list[dict[str, Any]] = []
        before = joined(data)

        def change(text: str) -> str:
            found = pii.find(text, kinds)
            spans.extend({"kind": s.kind, "text": s.text} for s in found)
            return pii.redact(text, found, style=p.style, salt=self.salt) if found else text

        changed = map_texts(data, change)
        if not spans:
            return None, data
        evidence = {"spans": spans[:50], "before": before[:2000], "after": joined(changed)[:2000], "style": p.style}
        if p.style == "drop":
            return Decision(i, "pii", "drop", "pii", evidence), data
        return Decision(i, "pii", "modify", "pii_redacted", evidence), changed

    def _injection(self, i: int, rid: str, kind: str, data: dict[str, Any], p: InjectionParams) -> Any:
        text = joined(data)
        for category in p.categories:
            for name, pattern in INJECTION_PATTERNS[category]:
                match = pattern.search(text)
                if match:
                    start = max(0, match.start() - 80)
                    evidence = {
                        "category": category,
                        "pattern": name,
                        "match": match.group()[:200],
                        "context": text[start : match.end() + 80],
                    }
                    return Decision(i, "injection", "drop", category, evidence), data
        return None, data

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
        folded = text.casefold()
        if p.include and not any(k.casefold() in folded for k in p.include):
            return Decision(i, "rules", "drop", "missing_keyword", {"include": p.include}), data
        for keyword in p.exclude:
            if keyword.casefold() in folded:
                return Decision(i, "rules", "drop", "excluded_keyword", {"keyword": keyword}), data
        if p.regex_exclude:
            match = re.search(p.regex_exclude, text)
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
        tokens = words(joined(data))
        for start in range(max(0, len(tokens) - p.ngram + 1)):
            run = " ".join(tokens[start : start + p.ngram])
            found = index.get(hash(run))
            if found is not None:
                return Decision(
                    i, "contamination", "drop", "contaminated", {"eval_record": found, "overlap": run}
                ), data
        return None, data


def ngram_hashes(text: str, size: int) -> Iterator[int]:
    """Hashes of every run of ``size`` words (stable within one process, which is all an index needs)."""
    tokens = words(text)
    for start in range(max(0, len(tokens) - size + 1)):
        yield hash(" ".join(tokens[start : start + size]))


def eval_index(rows: Iterator[tuple[str, str, dict[str, Any]]], splits: set[str] | None, size: int) -> dict[int, str]:
    """The n-gram index of an eval set: (record id, split, data) rows, those of ``splits`` (all when None)."""
    index: dict[int, str] = {}
    for rid, split, data in rows:
        if splits is None or split in splits:
            for key in ngram_hashes(joined(data), size):
                index.setdefault(key, rid)
    return index


_DETECTOR_READY = False


def detect_language(text: str) -> str:
    """The record's language as an ISO code (zh for Chinese), or "" when there is too little text to tell."""
    global _DETECTOR_READY
    from langdetect import DetectorFactory, LangDetectException, detect

    if not _DETECTOR_READY:
        DetectorFactory.seed = 0  # langdetect samples; a seed makes a re-run decide the same
        _DETECTOR_READY = True
    try:
        code = str(detect(text[:2000]))
    except LangDetectException:
        return ""
    return code.split("-")[0]
