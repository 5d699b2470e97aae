"""Child process: write a cleaning's result as a new version's records.

Streams the source version, the recipe's decisions and its changed records together (all three are in the
source's order, so one pass with a cursor into each keeps memory at a batch), applies the user's overrides
(frozen in a file when the commit started) and writes ``records.parquet`` with the new version's statistics,
token lengths included when the dataset has a base model.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from app.datasets.records import record_schema
from app.datasets.stats import Stats, record_plain_text
from app.datasets.template import record_tokens, renderer_for
from worker.protocol import progress, run_child

BATCH = 5000


def _column_pairs(path: Path, columns: list[str]) -> Iterator[tuple[Any, Any]]:
    import pyarrow.parquet as pq

    for batch in pq.ParquetFile(str(path), pre_buffer=False).iter_batches(batch_size=BATCH, columns=columns):
        yield from zip(batch.column(0).to_pylist(), batch.column(1).to_pylist(), strict=True)


class Cursor:
    """Walks a file of (record id, value) rows in the source's order: ``take(rid)`` returns the values of the
    rows for that record (none when the next row is for a later record)."""

    def __init__(self, rows: Iterator[tuple[Any, Any]]) -> None:
        self._rows = rows
        self._head = next(self._rows, None)

    def take(self, record_id: str) -> list[Any]:
        found = []
        while self._head is not None and self._head[0] == record_id:
            found.append(self._head[1])
            self._head = next(self._rows, None)
        return found

    @property
    def exhausted(self) -> bool:
        return self._head is None


def commit(job: dict[str, Any]) -> dict[str, Any]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    base = Path(job["cleaning_dir"])
    chosen: dict[str, str] = json.loads((base / job["overrides_file"]).read_text())
    tokenizer = job.get("tokenizer")
    renderer = renderer_for(Path(tokenizer["model_dir"]), tokenizer.get("chat_template")) if tokenizer else None
    decisions = Cursor(_column_pairs(base / "decisions.parquet", ["record_id", "action"]))
    changes = Cursor(_column_pairs(base / "modified.parquet", ["record_id", "data"]))
    source = pq.ParquetFile(job["source"], pre_buffer=False)
    total = source.metadata.num_rows
    schema = record_schema()
    stats = Stats()
    count = done = 0
    last = 0.0
    target = base / "records.parquet"
    partial = target.with_name("records.parquet.partial")
    with pq.ParquetWriter(str(partial), schema) as writer:
        for batch in source.iter_batches(batch_size=BATCH):
            rows: dict[str, list[Any]] = {name: [] for name in schema.names}
            for row in batch.to_pylist():
                rid = row["id"]
                dropped = "drop" in decisions.take(rid)
                changed = changes.take(rid)
                verdict = chosen.get(rid)
                done += 1
                if verdict == "drop" or (verdict is None and dropped):
                    continue
                data = row["data"] if verdict == "original" or not changed else changed[-1]
                for name in schema.names:
                    rows[name].append(data if name == "data" else row.get(name, ""))
                parsed = json.loads(data)
                tokens = record_tokens(renderer, row["kind"], parsed)
                stats.add(row["kind"], row["split"], parsed, record_plain_text(row["kind"], parsed), tokens)
                count += 1
            writer.write_table(pa.table(rows, schema=schema))
            now = time.monotonic()
            if now - last > 0.5:
                last = now
                progress(min(0.99, done / max(total, 1)), "committing_records", done=f"{done:,}", total=f"{total:,}")
    if not (decisions.exhausted and changes.exhausted):
        partial.unlink()
        raise RuntimeError("the decisions do not follow the source version's order; run the cleaning again")
    if count == 0:
        partial.unlink()
        raise RuntimeError("every record would be dropped; restore some before committing")
    partial.rename(target)
    return {"records": count, "stats": stats.as_dict()}


def main(job: dict[str, Any]) -> int:
    return run_child(commit, job, error_code="commit_error")


if __name__ == "__main__":
    sys.exit(main(json.loads(sys.argv[1])))
