"""Cleaning throughput: records per second and peak memory of Refinery's cleaning steps on synthetic records
built from alpaca_5000, against datasketch's MinHash LSH as the near-duplicate baseline, two ways: one record
at a time (``datasketch``), and as its documentation recommends for speed (``datasketch_batched``: the
MinHashes of a thousand records at once with ``MinHash.bulk``, which hashes each record's shingles in one
``update_batch`` call, and the index filled through ``insertion_session``).

Each measurement runs in its own Python process, so peak RSS is that measurement's alone. Near dedup and its
two baselines run one after the other at each size, ``--rounds`` times, so that the machine's load falls on
all three alike; the ratio is taken per round.

    .venv/bin/python bench/cleaning_throughput.py                 # 10k and 100k records
    .venv/bin/python bench/cleaning_throughput.py --sizes 10000 100000 1000000

Writes bench/results/cleaning.json and bench/results/cleaning.md.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT / "tests" / "fixtures" / "datasets"
RESULTS = ROOT / "bench" / "results"
BATCH = 1000


def records(n: int, seed: int = 0) -> Any:
    """n chat records: each a question from alpaca with an answer stitched from three alpaca answers' sentences
    (so records are mostly distinct, as real data is), with 5% planted near duplicates of earlier records."""
    rows = json.loads((SHARED / "alpaca_5000.json").read_text())
    sentences = [s.strip() + "." for r in rows for s in r["output"].split(".") if len(s.split()) >= 4]
    rng = random.Random(seed)  # noqa: S311 - synthetic data, not secrets
    made: list[dict[str, Any]] = []
    for k in range(n):
        if made and rng.random() < 0.05:
            copy = json.loads(json.dumps(made[rng.randrange(len(made))]))
            copy["messages"][1]["content"] += " Indeed."
            record = copy
        else:
            answer = " ".join(rng.choice(sentences) for _ in range(3))
            question = rows[k % len(rows)]["instruction"]
            record = {"messages": [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]}
        if len(made) < 20_000:
            made.append(record)
        yield record


def measure_refinery(steps: list[dict[str, Any]], n: int) -> dict[str, Any]:
    from app.cleaning.ops import Cleaner
    from app.cleaning.recipe import validate_steps
    from worker.cleaning.run import skipped_steps

    checked = validate_steps(steps)
    skip = skipped_steps(checked, n)  # as the worker does: the default semantic dedup only up to its max_records
    embed = None
    if any(s["op"] == "semantic_dedup" for i, s in enumerate(checked) if i not in skip):
        from worker.cleaning.embed import Embedder

        embed = Embedder()
    cleaner = Cleaner(checked, salt="bench", embed=embed, skip=frozenset(skip))
    dropped = 0
    batch: list[tuple[str, str, dict[str, Any]]] = []
    started = time.perf_counter()
    for k, record in enumerate(records(n)):
        batch.append((str(k), "chat", record))
        if len(batch) == BATCH:
            dropped += sum(o.data is None for o in cleaner.process_many(batch))
            batch = []
    if batch:
        dropped += sum(o.data is None for o in cleaner.process_many(batch))
    return {"seconds": time.perf_counter() - started, "dropped": dropped}


def measure_datasketch(n: int, threshold: float = 0.8, num_perm: int = 128, shingle: int = 3) -> dict[str, Any]:
    """The baseline: datasketch's MinHash and MinHashLSH, one record at a time, the same shingles and rule
    (drop when an indexed record is at least ``threshold`` similar, else index it)."""
    from datasketch import MinHash, MinHashLSH

    from app.cleaning.text import joined, shingles

    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
    kept: dict[str, Any] = {}
    dropped = 0
    started = time.perf_counter()
    for k, record in enumerate(records(n)):
        minhash = MinHash(num_perm=num_perm, seed=1)
        for gram in shingles(joined(record), shingle):
            minhash.update(gram.encode())
        if any(minhash.jaccard(kept[key]) >= threshold for key in lsh.query(minhash)):
            dropped += 1
            continue
        lsh.insert(str(k), minhash)
        kept[str(k)] = minhash
    return {"seconds": time.perf_counter() - started, "dropped": dropped}


def measure_datasketch_batched(n: int, threshold: float = 0.8, num_perm: int = 128, shingle: int = 3) -> dict[str, Any]:
    """The baseline as datasketch's documentation recommends for many records: MinHash.bulk over a batch's
    shingle sets (update_batch, vectorised) and the LSH index filled in an insertion session; the same rule."""
    from datasketch import MinHash, MinHashLSH

    from app.cleaning.text import joined, shingles

    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
    kept: dict[str, Any] = {}
    dropped = 0
    started = time.perf_counter()
    batch: list[tuple[str, list[bytes]]] = []

    def flush() -> int:
        lost = 0
        hashes = MinHash.bulk([grams for _key, grams in batch], num_perm=num_perm, seed=1)
        with lsh.insertion_session() as session:  # the in-memory index sees each insert at once
            for (key, _grams), minhash in zip(batch, hashes, strict=True):
                if any(minhash.jaccard(kept[other]) >= threshold for other in lsh.query(minhash)):
                    lost += 1
                    continue
                session.insert(key, minhash)
                kept[key] = minhash
        batch.clear()
        return lost

    for k, record in enumerate(records(n)):
        batch.append((str(k), [gram.encode() for gram in shingles(joined(record), shingle)]))
        if len(batch) == BATCH:
            dropped += flush()
    if batch:
        dropped += flush()
    return {"seconds": time.perf_counter() - started, "dropped": dropped}


BASELINES = {"datasketch": measure_datasketch, "datasketch_batched": measure_datasketch_batched}

CASES: dict[str, list[dict[str, Any]]] = {
    "exact_dedup": [{"op": "exact_dedup"}],
    "near_dedup": [{"op": "near_dedup"}],
    "pii": [{"op": "pii"}],
    "default_recipe": [
        {"op": op} for op in ("normalize", "exact_dedup", "near_dedup", "pii", "injection", "profanity", "quality")
    ],
}


def one(case: str, impl: str, n: int) -> None:
    """Run one measurement in this process and print it as JSON."""
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    result = BASELINES[impl](n) if impl in BASELINES else measure_refinery(CASES[case], n)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    result.update(
        case=case,
        impl=impl,
        records=n,
        records_per_second=round(n / result["seconds"]),
        peak_rss_mb=round(peak / 1024),
        rss_growth_mb=round((peak - before) / 1024),
    )
    print(json.dumps(result))


def run(case: str, impl: str, n: int) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, __file__, "--one", case, impl, str(n)], capture_output=True, text=True, cwd=ROOT, check=True
    )
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    print(json.dumps(result), file=sys.stderr)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--baseline-max", type=int, default=100_000, help="largest size the baseline runs at")
    parser.add_argument("--rounds", type=int, default=2, help="near dedup against its baselines, this many times")
    parser.add_argument("--one", nargs=3, metavar=("CASE", "IMPL", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        one(args.one[0], args.one[1], int(args.one[2]))
        return
    rows = []
    for n in args.sizes:
        for case in CASES:
            if case == "default_recipe" and n > 100_000:
                continue  # the profanity model makes it the slowest; 100k shows its growth
            if case != "near_dedup":
                rows.append(run(case, "refinery", n))
        for round_ in range(1, args.rounds + 1):
            rows.append(run("near_dedup", "refinery", n) | {"round": round_})
            if n <= args.baseline_max:
                rows.append(run("near_dedup", "datasketch_batched", n) | {"round": round_})
                rows.append(run("near_dedup", "datasketch", n) | {"round": round_})
    report = {
        "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}, Python {platform.python_version()}",
        "cores": len(__import__("os").sched_getaffinity(0)),
        "results": rows,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "cleaning.json").write_text(json.dumps(report, indent=2) + "\n")
    lines = [
        "| case | implementation | round | records | records/s | seconds | dropped | peak RSS (MB) "
        "| vs datasketch batched | vs datasketch per record |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    by = {(r["impl"], r["records"], r.get("round")): r for r in rows}
    for r in rows:
        ratios = ["", ""]
        if r["case"] == "near_dedup" and r["impl"] == "refinery":
            for i, impl in enumerate(("datasketch_batched", "datasketch")):
                other = by.get((impl, r["records"], r.get("round")))
                if other:
                    ratios[i] = f"{other['seconds'] / r['seconds']:.1f}×"
        lines.append(
            f"| {r['case']} | {r['impl']} | {r.get('round', '')} | {r['records']:,} | {r['records_per_second']:,} | "
            f"{r['seconds']:.1f} | {r['dropped']:,} | {r['peak_rss_mb']:,} | {ratios[0]} | {ratios[1]} |"
        )
    (RESULTS / "cleaning.md").write_text(
        f"Cleaning throughput on {report['machine']}, {report['cores']} cores "
        f"(`python bench/cleaning_throughput.py`).\n\n" + "\n".join(lines) + "\n"
    )
    print("\n".join(lines))


if __name__ == "__main__":
    main()
