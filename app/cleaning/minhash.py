"""Near-duplicate detection with MinHash LSH, in memory that stays small per record.

Each kept record costs its signature truncated to 16 bits per permutation (two equal 32-bit values agree in
their low 16 bits; two different ones do so with probability 1/65,536, too rarely to move a similarity) and,
per band, a 32-bit band hash with a 32-bit record number: about 0.5 KB for 128 permutations in 32 bands,
against about 4 KB for a hash-map LSH holding MinHash objects and a preview of the text. The band hashes
live in sorted runs that are merged as they grow (a log-structured index), so a batch is looked up with one
binary search per run and band, and inserting stays amortised O(log n) per record.

Records are decided in order: the earliest record of a cluster stays; a later one is a duplicate of the kept
record it is most similar to (the earliest among equals).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

CHUNK = 1 << 16  # signatures are stored in chunks of this many rows
MIX = np.uint64(0x9E3779B97F4A7C15)


def bands_for(num_perm: int) -> int:
    """Bands of at least four rows, as many as divide the permutations (32 for 128)."""
    return next(b for b in (32, 16, 8, 4, 2, 1) if num_perm % b == 0 and num_perm // b >= 4)


@dataclass(frozen=True)
class Match:
    number: int  # the kept record's number (its order among kept records)
    record_id: str
    similarity: float


class NearDuplicateIndex:
    def __init__(self, *, num_perm: int, threshold: float) -> None:
        self.num_perm = num_perm
        self.threshold = threshold
        self.bands = bands_for(num_perm)
        self.rows = num_perm // self.bands
        self.count = 0
        self.ids: list[str] = []
        self._signatures: list[np.ndarray] = []
        # sorted runs: (band hashes (bands, m) sorted along each row, record numbers in the same order)
        self._runs: list[tuple[np.ndarray, np.ndarray]] = []

    def nbytes(self) -> int:
        """Bytes of the arrays (the record ids are Python strings beside them)."""
        used = self.count * self.num_perm * 2
        return used + sum(h.nbytes + n.nbytes for h, n in self._runs)

    def _band_hashes(self, signatures: np.ndarray) -> np.ndarray:
        """(n, bands) 32-bit hashes of each band's rows."""
        values = signatures.astype(np.uint64).reshape(len(signatures), self.bands, self.rows)
        hashes = np.zeros((len(signatures), self.bands), dtype=np.uint64)
        with np.errstate(over="ignore"):
            for row in range(self.rows):
                hashes = (hashes ^ values[:, :, row]) * MIX
                hashes ^= hashes >> np.uint64(29)
        # 32 bits are enough: two different bands collide with probability 2^-32, and a collision only adds a
        # candidate that the signature comparison then rejects
        return (hashes >> np.uint64(32)).astype(np.uint32)

    def _signature(self, number: int) -> np.ndarray:
        row: np.ndarray = self._signatures[number // CHUNK][number % CHUNK]
        return row

    def _candidates(self, hashes: np.ndarray) -> list[set[int]]:
        found: list[set[int]] = [set() for _ in range(len(hashes))]
        for run_hashes, run_numbers in self._runs:
            for band in range(self.bands):
                keys = hashes[:, band]
                left = np.searchsorted(run_hashes[band], keys, side="left")
                right = np.searchsorted(run_hashes[band], keys, side="right")
                for query in np.nonzero(right > left)[0]:
                    found[query].update(run_numbers[band, left[query] : right[query]].tolist())
        return found

    def _batch_pairs(self, hashes: np.ndarray) -> list[set[int]]:
        """For each record of a batch, the earlier records of the same batch sharing one of its band hashes."""
        earlier: list[set[int]] = [set() for _ in range(len(hashes))]
        for band in range(self.bands):
            order = np.argsort(hashes[:, band], kind="stable")
            keys = hashes[order, band]
            same = np.nonzero(keys[1:] == keys[:-1])[0]
            for k in same:  # adjacent equal keys: walk back over the whole group
                later = int(order[k + 1])
                back = k
                while back >= 0 and keys[back] == keys[k + 1]:
                    earlier[later].add(int(order[back]))
                    back -= 1
        return earlier

    def add_batch(self, ids: list[str], signatures: np.ndarray) -> list[Match | None]:
        """Decide a batch in order: None for a record kept (and indexed), else the kept record it repeats."""
        if not ids:
            return []
        hashes = self._band_hashes(signatures)
        short = (signatures & 0xFFFF).astype(np.uint16)
        candidates = self._candidates(hashes)
        earlier = self._batch_pairs(hashes)
        kept: list[int] = []
        number_of: dict[int, int] = {}  # batch position of a kept record → its number
        results: list[Match | None] = []
        for query in range(len(ids)):
            best: tuple[float, int] | None = None
            pool = [(self._signature(n), n) for n in candidates[query]]
            pool += [(short[p], number_of[p]) for p in earlier[query] if p in number_of]
            for signature, number in pool:
                score = float(np.count_nonzero(signature == short[query])) / self.num_perm
                if score >= self.threshold and (best is None or (-score, number) < (-best[0], best[1])):
                    best = (score, number)
            if best is None:
                number_of[query] = self.count + len(kept)
                kept.append(query)
                results.append(None)
                continue
            number = best[1]
            record_id = self.ids[number] if number < self.count else ids[kept[number - self.count]]
            results.append(Match(number, record_id, round(best[0], 3)))
        if kept:
            self._append(kept, ids, short, hashes)
        return results

    def _append(self, kept: list[int], ids: list[str], short: np.ndarray, hashes: np.ndarray) -> None:
        rows = short[kept]
        start = self.count
        while len(rows):  # fill the last chunk (allocated whole; untouched pages cost nothing), then new ones
            if start // CHUNK == len(self._signatures):
                self._signatures.append(np.empty((CHUNK, self.num_perm), dtype=np.uint16))
            offset = start % CHUNK
            room = CHUNK - offset
            self._signatures[-1][offset : offset + min(room, len(rows))] = rows[:room]
            start += min(room, len(rows))
            rows = rows[room:]
        numbers = np.arange(self.count, self.count + len(kept), dtype=np.uint32)
        self.ids.extend(ids[k] for k in kept)
        self.count += len(kept)
        run = self._merge((hashes[kept].T.copy(), np.broadcast_to(numbers, (self.bands, len(kept))).copy()), None)
        self._runs.append(run)
        # merge while the newest run is at least half the size of the one before (sizes stay geometric)
        while len(self._runs) > 1 and self._runs[-1][0].shape[1] * 2 >= self._runs[-2][0].shape[1]:
            newer, older = self._runs.pop(), self._runs.pop()
            self._runs.append(self._merge(older, newer))

    def _merge(
        self, one: tuple[np.ndarray, np.ndarray], other: tuple[np.ndarray, np.ndarray] | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """One sorted run from one or two, band by band (so the temporary arrays are one band's)."""
        size = one[0].shape[1] + (other[0].shape[1] if other else 0)
        hashes = np.empty((self.bands, size), dtype=np.uint32)
        numbers = np.empty((self.bands, size), dtype=np.uint32)
        for band in range(self.bands):
            h = np.concatenate([one[0][band], other[0][band]]) if other else one[0][band]
            n = np.concatenate([one[1][band], other[1][band]]) if other else one[1][band]
            order = np.argsort(h, kind="stable")
            hashes[band], numbers[band] = h[order], n[order]
        return hashes, numbers
