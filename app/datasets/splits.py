"""Deterministic, seeded train / validation / test assignment by record id."""

from __future__ import annotations

import hashlib

DEFAULT_RATIOS = {"train": 0.9, "validation": 0.05, "test": 0.05}
SPLITS = ("train", "validation", "test")


def normalize_ratios(ratios: dict[str, float]) -> dict[str, float]:
    clean = {name: max(0.0, float(ratios.get(name, 0.0))) for name in SPLITS}
    total = sum(clean.values())
    if total <= 0:
        return dict(DEFAULT_RATIOS)
    return {name: value / total for name, value in clean.items()}


def assign(record_id: str, seed: int, ratios: dict[str, float]) -> str:
    digest = hashlib.blake2b(f"{seed}:{record_id}".encode(), digest_size=8).digest()
    point = int.from_bytes(digest, "big") / 2**64
    edge = 0.0
    for name in SPLITS:
        edge += ratios.get(name, 0.0)
        if point < edge:
            return name
    return "train"
