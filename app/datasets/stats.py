"""Dataset statistics gathered in one streaming pass: kinds, splits, turns, roles, languages, duplicates,
token lengths (with the chosen base model's tokenizer)."""

from __future__ import annotations

import hashlib
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from app.core.i18n import N_

TOKEN_BINS = (32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768)


def script_of(text: str) -> str:
    """The dominant writing system, a cheap and dependency-free proxy for the language mix."""
    counts: Counter[str] = Counter()
    for char in text[:2000]:
        if char.isalpha():
            code = ord(char)
            if 0x4E00 <= code <= 0x9FFF or 0x3400 <= code <= 0x4DBF:
                counts[N_("Chinese (Han)")] += 1
            elif 0x3040 <= code <= 0x30FF:
                counts[N_("Japanese (kana)")] += 1
            elif 0xAC00 <= code <= 0xD7AF:
                counts[N_("Korean (Hangul)")] += 1
            elif 0x0400 <= code <= 0x04FF:
                counts[N_("Cyrillic")] += 1
            elif 0x0600 <= code <= 0x06FF:
                counts[N_("Arabic")] += 1
            elif code < 0x0250:
                counts[N_("Latin")] += 1
            else:
                counts[N_("other")] += 1
    if not counts:
        return N_("none")
    # a few Han characters in Latin text still mark the record as containing Chinese
    if counts[N_("Chinese (Han)")] >= max(5, sum(counts.values()) // 5):
        return N_("Chinese (Han)")
    return counts.most_common(1)[0][0]


def normalized_hash(text: str) -> bytes:
    folded = " ".join(unicodedata.normalize("NFKC", text).casefold().split())
    return hashlib.blake2b(folded.encode("utf-8"), digest_size=12).digest()


@dataclass
class Stats:
    kinds: Counter[str] = field(default_factory=Counter)
    splits: Counter[str] = field(default_factory=Counter)
    turns: Counter[int] = field(default_factory=Counter)
    roles: Counter[str] = field(default_factory=Counter)
    languages: Counter[str] = field(default_factory=Counter)
    token_bins: Counter[int] = field(default_factory=Counter)
    token_total: int = 0
    token_max: int = 0
    token_counted: int = 0
    _seen: set[bytes] = field(default_factory=set)
    duplicates: int = 0

    def add(self, kind: str, split: str, data: dict[str, Any], text: str, tokens: int | None) -> None:
        self.kinds[kind] += 1
        self.splits[split] += 1
        messages = data.get("messages") or (data.get("prompt", []) + data.get("chosen", []))
        if messages:
            self.turns[len(messages)] += 1
            for message in messages:
                self.roles[message["role"]] += 1
        self.languages[script_of(text)] += 1
        digest = normalized_hash(text)
        if digest in self._seen:
            self.duplicates += 1
        else:
            self._seen.add(digest)
        if tokens is not None:
            self.token_counted += 1
            self.token_total += tokens
            self.token_max = max(self.token_max, tokens)
            self.token_bins[next((b for b in TOKEN_BINS if tokens <= b), TOKEN_BINS[-1] * 2)] += 1

    def as_dict(self) -> dict[str, Any]:
        return {
            "kinds": dict(self.kinds),
            "splits": dict(self.splits),
            "turns": {str(k): v for k, v in sorted(self.turns.items())},
            "roles": dict(self.roles.most_common()),
            "languages": dict(self.languages.most_common()),
            "duplicates": self.duplicates,
            "tokens": {
                "counted": self.token_counted,
                "mean": round(self.token_total / self.token_counted, 1) if self.token_counted else None,
                "max": self.token_max or None,
                "bins": {
                    str(k): self.token_bins.get(k, 0) for k in (*TOKEN_BINS, TOKEN_BINS[-1] * 2) if self.token_counted
                },
            },
        }


def record_plain_text(kind: str, data: dict[str, Any]) -> str:
    if kind == "text":
        return str(data["text"])
    messages = data.get("messages") or (data.get("prompt", []) + data.get("chosen", []))
    return "\n".join(str(m.get("content", "")) for m in messages)
