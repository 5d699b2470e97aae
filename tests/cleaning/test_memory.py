"""Cleaning streams its input: memory grows with the dedup indexes (a few hundred bytes per kept record), not
with the records. The child runs on a small and a five times larger synthetic dataset of 3 KB records; its
peak RSS (measured by the child itself) must grow by less than one record's size per extra record. A run that
held the records would grow by at least twice that (each record's JSON text and its parsed form); ours grows
by the index (about 0.5 KB a record) plus the allocator's fragmentation (together about 1.5 KB here)."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

from app.cleaning.recipe import validate_steps
from app.datasets.records import record_schema

RECORD_BYTES = 3000
STEPS = [{"op": "normalize"}, {"op": "exact_dedup"}, {"op": "near_dedup"}]


def write_dataset(path: Path, n: int) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = random.Random(n)
    vocabulary = [f"w{k}" for k in range(20_000)]
    schema = record_schema()
    with pq.ParquetWriter(str(path), schema) as writer:
        for start in range(0, n, 1000):
            rows: dict[str, list[Any]] = {name: [] for name in schema.names}
            for k in range(start, min(n, start + 1000)):
                answer = " ".join(rng.choices(vocabulary, k=RECORD_BYTES // 6))
                data = {
                    "messages": [
                        {"role": "user", "content": f"Question {k}?"},
                        {"role": "assistant", "content": answer},
                    ]
                }
                values = {"id": str(k + 1), "line": k + 1, "kind": "chat", "split": "train", "data": json.dumps(data)}
                for name in schema.names:
                    rows[name].append(values.get(name, ""))
            writer.write_table(pa.table(rows, schema=schema))


def peak_rss_mb(tmp_path: Path, n: int) -> int:
    source = tmp_path / f"{n}.parquet"
    write_dataset(source, n)
    spec = {"source": str(source), "output_dir": str(tmp_path / f"out{n}"), "steps": validate_steps(STEPS)}
    out = subprocess.run(
        [sys.executable, "-m", "worker.cleaning.run", json.dumps(spec)], capture_output=True, text=True, timeout=600
    )
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    result = next(json.loads(line)["result"] for line in out.stdout.splitlines() if '"result"' in line)
    assert result["records"] == n
    return int(result["peak_rss_mb"])


def test_memory_grows_with_the_index_not_the_records(tmp_path: Path) -> None:
    small, large = 2_000, 14_000
    grown_kb = (peak_rss_mb(tmp_path, large) - peak_rss_mb(tmp_path, small)) * 1024
    per_record = grown_kb / (large - small)
    print(f"peak RSS growth: {per_record:.2f} KB per record of {RECORD_BYTES / 1024:.1f} KB")
    assert per_record < RECORD_BYTES / 1024, per_record
