"""The text inside a record, as the cleaning operations read it: its strings, words, shingles and n-gram
runs, normalisation, and language detection."""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Callable, Iterator
from typing import Any

from app.cleaning.recipe import NormalizeParams


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


def answer_texts(data: dict[str, Any]) -> list[str]:
    """The strings of the record that its prompt does not hold: the answers (assistant turns, chosen, rejected)."""
    prompt = list(texts(data, prompt_only=True))
    out = []
    for text in texts(data):
        if prompt and text is prompt[0]:
            prompt.pop(0)
        else:
            out.append(text)
    return out


def answer_key(data: dict[str, Any]) -> int:
    """A 64-bit digest of the answers' words (case-folded), the same for answers that differ only in case,
    spacing and punctuation."""
    digest = hashlib.blake2b(" ".join(words(" ".join(answer_texts(data)).casefold())).encode(), digest_size=8)
    return int.from_bytes(digest.digest(), "big")


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


# Full-width punctuation and the ellipsis are how Chinese and Japanese are written: NFKC would fold them to
# ASCII (？ → ?, ， → ",", … → ...), which changes the text a model learns to write. Full-width letters and
# digits (Ａ, １) are compatibility forms and are still folded.
CJK_PUNCTUATION = "\uff01-\uff0f\uff1a-\uff20\uff3b-\uff40\uff5b-\uff60\u2026\u2025"
FOLDABLE = re.compile(f"[^{CJK_PUNCTUATION}]+")


def nfkc(text: str, *, keep_cjk_punctuation: bool) -> str:
    if not keep_cjk_punctuation:
        return unicodedata.normalize("NFKC", text)
    return FOLDABLE.sub(lambda run: unicodedata.normalize("NFKC", run.group()), text)


def normalize_text(text: str, params: NormalizeParams) -> str:
    if params.nfkc:
        text = nfkc(text, keep_cjk_punctuation=params.keep_cjk_punctuation)
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


def ngram_runs(text: str, size: int) -> Iterator[str]:
    """Every run of ``size`` consecutive words of the text."""
    tokens = words(text)
    for start in range(max(0, len(tokens) - size + 1)):
        yield " ".join(tokens[start : start + size])


def eval_index(rows: Iterator[tuple[str, str, dict[str, Any]]], splits: set[str] | None, size: int) -> dict[int, str]:
    """The n-gram index of an eval set: (record id, split, data) rows, those of ``splits`` (all when None).
    Keys are Python string hashes, stable within the one process that builds and reads the index."""
    index: dict[int, str] = {}
    for rid, split, data in rows:
        if splits is None or split in splits:
            for run in ngram_runs(joined(data), size):
                index.setdefault(hash(run), rid)
    return index


def detect_language(text: str) -> str:
    """The record's language as an ISO code (zh for Chinese), or "" when there is too little text to tell."""
    from langdetect import DetectorFactory, LangDetectException, detect

    DetectorFactory.seed = 0  # langdetect samples; a seed makes a re-run decide the same
    try:
        code = str(detect(text[:2000]))
    except LangDetectException:
        return ""
    return code.split("-")[0]
