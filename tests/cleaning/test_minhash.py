"""The compact near-duplicate index decides exactly as an exhaustive comparison with every kept record does,
across batch boundaries, within a batch, and after its sorted runs have been merged many times."""

from __future__ import annotations

import random

import numpy as np

from app.cleaning.minhash import NearDuplicateIndex


def signatures(n: int, num_perm: int, rng: random.Random) -> tuple[np.ndarray, list[int | None]]:
    """Random token sets, a fifth of them a copy of an earlier one with a few tokens changed."""
    from rensa import RMinHash

    sets: list[list[str]] = []
    planted: list[int | None] = []
    for k in range(n):
        if sets and rng.random() < 0.2:
            source = rng.randrange(len(sets))
            tokens = list(sets[source])
            for _ in range(rng.choice([1, 2, 3, 15])):  # small edits (duplicates) and large ones (not)
                tokens[rng.randrange(len(tokens))] = f"edit{k}-{rng.random()}"
            planted.append(source)
        else:
            tokens = [f"t{rng.randrange(10**6)}" for _ in range(40)]
            planted.append(None)
        sets.append(tokens)
    digests = np.array(RMinHash.digests_from_token_sets(sets, num_perm, 1), dtype=np.uint32)
    return digests, planted


def exhaustive(digests: np.ndarray, threshold: float) -> list[tuple[int, float] | None]:
    short = (digests & 0xFFFF).astype(np.uint16)
    kept: list[int] = []
    out: list[tuple[int, float] | None] = []
    for k in range(len(short)):
        best = None
        if kept:
            scores = np.count_nonzero(short[kept] == short[k], axis=1) / short.shape[1]
            number = int(np.argmax(scores))  # the first of the most similar
            if scores[number] >= threshold:
                best = (number, float(scores[number]))
        if best is None:
            kept.append(k)
        out.append(best)
    return out


def test_same_decisions_as_comparing_with_every_kept_record() -> None:
    rng = random.Random(7)
    digests, planted = signatures(3000, 128, rng)
    index = NearDuplicateIndex(num_perm=128, threshold=0.8)
    got = []
    for start in range(0, len(digests), 97):  # odd batches: duplicates fall both within and across them
        ids = [str(k) for k in range(start, min(start + 97, len(digests)))]
        got.extend(index.add_batch(ids, digests[start : start + 97]))
    want = exhaustive(digests, 0.8)
    assert [(m.number, m.similarity) if m else None for m in got] == [
        (n, round(s, 3)) if n is not None else None for n, s in ((w or (None, 0.0)) for w in want)
    ]
    dropped = sum(m is not None for m in got)
    assert 300 < dropped < sum(p is not None for p in planted)  # the heavily edited copies are kept
    assert index.count == len(digests) - dropped
    assert index.nbytes() < index.count * 600  # 256 B signature + 32 bands × 8 B
    assert len(index._runs) <= 12  # merged as it grew
