"""Child process: run a cleaning recipe over a dataset version, streaming it in batches.

Writes ``decisions.parquet`` (one row per drop or change, with its reason and evidence) and
``modified.parquet`` (the changed text of every record the recipe changed) into ``<output>.partial`` and
renames it when complete. Memory holds one batch plus the dedup indexes.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from app.cleaning.ops import Cleaner
from app.cleaning.text import eval_index
from worker.training.protocol import progress, run_child

BATCH = 1000
DECISION_COLUMNS = (
    ("record_id", "string"),
    ("split", "string"),
    ("step", "int32"),
    ("op", "string"),
    ("action", "string"),
    ("reason", "string"),
    ("evidence", "string"),
)


def _rows(path: str) -> Any:
    import pyarrow.parquet as pq

    for batch in pq.ParquetFile(path).iter_batches(batch_size=BATCH, columns=["id", "split", "data"]):
        for row in batch.to_pylist():
            yield row["id"], row["split"], json.loads(row["data"])


def eval_sets(job: dict[str, Any]) -> dict[int, dict[int, str]]:
    """The n-gram index of each contamination step's eval records: this version's held-out splits, or the
    other version the step names."""
    found = {}
    for index, step in enumerate(job["steps"]):
        if step["op"] != "contamination":
            continue
        against = step["params"]["against"]
        path = job.get("eval_sources", {}).get(str(index), job["source"])
        splits = None if against == "version" else {"test"} if against == "test" else {"validation", "test"}
        found[index] = eval_index(_rows(path), splits, step["params"]["ngram"])
    return found


def clean(job: dict[str, Any]) -> dict[str, Any]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    output = Path(job["output_dir"])
    partial = output.with_name(output.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    source = pq.ParquetFile(job["source"])
    total = source.metadata.num_rows
    steps = job["steps"]
    cleaner = Cleaner(steps, salt=job.get("salt", ""), eval_sets=eval_sets(job))
    decision_schema = pa.schema([(name, getattr(pa, kind)()) for name, kind in DECISION_COLUMNS])
    modified_schema = pa.schema([("record_id", pa.string()), ("data", pa.string())])
    dropped = modified = done = 0
    per_step = [{"op": s["op"], "dropped": 0, "modified": 0, "reasons": Counter()} for s in steps]
    started, last = time.monotonic(), 0.0
    with (
        pq.ParquetWriter(str(partial / "decisions.parquet"), decision_schema) as decisions,
        pq.ParquetWriter(str(partial / "modified.parquet"), modified_schema) as changes,
    ):
        for batch in source.iter_batches(batch_size=BATCH, columns=["id", "kind", "split", "data"]):
            rows = batch.to_pylist()
            outcomes = cleaner.process_many(
                [(r["id"], r["kind"], json.loads(r["data"])) for r in rows], [r["split"] for r in rows]
            )
            found: dict[str, list[Any]] = {name: [] for name, _kind in DECISION_COLUMNS}
            changed: dict[str, list[Any]] = {"record_id": [], "data": []}
            for row, outcome in zip(rows, outcomes, strict=True):
                for d in outcome.decisions:
                    for name, value in zip(
                        found,
                        (
                            row["id"],
                            row["split"],
                            d.step,
                            d.op,
                            d.action,
                            d.reason,
                            json.dumps(d.evidence, ensure_ascii=False),
                        ),
                        strict=True,
                    ):
                        found[name].append(value)
                    per_step[d.step]["dropped" if d.action == "drop" else "modified"] += 1
                    per_step[d.step]["reasons"][d.reason] += 1
                if outcome.data is None:
                    dropped += 1
                if outcome.changed is not None:
                    changed["record_id"].append(row["id"])
                    changed["data"].append(json.dumps(outcome.changed, ensure_ascii=False))
                    modified += outcome.data is not None
            decisions.write_table(pa.table(found, schema=decision_schema))
            changes.write_table(pa.table(changed, schema=modified_schema))
            done += len(rows)
            now = time.monotonic()
            if now - last > 0.5:
                last = now
                progress(min(0.99, done / max(total, 1)), "cleaning_records", done=f"{done:,}", total=f"{total:,}")
    shutil.rmtree(output, ignore_errors=True)
    partial.rename(output)
    return {
        "records": total,
        "kept": total - dropped,
        "dropped": dropped,
        "modified": modified,
        "steps": [{**s, "reasons": dict(s["reasons"])} for s in per_step],
        "seconds": round(time.monotonic() - started, 2),
    }


def main(job: dict[str, Any]) -> int:
    return run_child(clean, job, error_code="cleaning_error")


if __name__ == "__main__":
    sys.exit(main(json.loads(sys.argv[1])))
