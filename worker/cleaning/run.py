"""Child process: run a cleaning recipe over a dataset version, streaming it in batches.

Writes ``decisions.parquet`` (one row per drop or change, with its reason and evidence) and
``modified.parquet`` (the changed text of every record the recipe changed) and ``kept.parquet`` (the text of
each record a duplicate was dropped for, read in a second pass so the dedup index never holds text) into
``<output>.partial`` and renames it when complete. Memory holds one batch plus the dedup indexes.
"""

from __future__ import annotations

import json
import resource
import shutil
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from app.cleaning.ops import Cleaner, PatternTimeout
from app.cleaning.text import answer_of, eval_index, joined
from app.datasets.template import record_tokens, renderer_for
from worker.protocol import progress, run_child
from worker.training.data import DataError

BATCH = 1000
JUDGED_BATCH = 40  # a judge answers a few records a second: smaller batches keep the progress bar moving
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

    for batch in pq.ParquetFile(path, pre_buffer=False).iter_batches(batch_size=BATCH, columns=["id", "split", "data"]):
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


def record_prompt(data: dict[str, Any]) -> str:
    """What the judge reads about one training record: the request and the answer to rate."""
    answer = answer_of(data)
    if answer is None:  # a plain text or a preference pair: the whole record is the thing to rate
        request, answer = "(a training text with no separate request)", joined(data)
    else:
        request = joined(data, prompt_only=True)
    return (
        f"Conversation so far:\n{request[:6000]}\n\nAnswer to rate:\n{answer[:6000]}\n\n"
        "Rate the answer from 1 (poor) to 5 (excellent) on relevance, clarity, completeness and accuracy, as an "
        "example an assistant should learn from. Reply "
        'as {"relevance": n, "clarity": n, "completeness": n, "accuracy": n, "reasons": "<why>"}.'
    )


def judge_fns(job: dict[str, Any]) -> dict[int, Any]:
    """Per judge step, a function scoring a batch of records through that judge's chat endpoint, four at a
    time. A malformed reply or a timeout leaves that record unscored (it is kept, and counted); a judge that
    fails many calls in a row stops the run with its last error."""
    from concurrent.futures import ThreadPoolExecutor

    from worker.evaluation.judge import MAX_FAILURES_IN_A_ROW, Client, Judging, api_key, parse_rubric

    def scorer(judging: Judging) -> Any:
        def score(datas: list[dict[str, Any]]) -> list[tuple[dict[str, Any] | None, str]]:
            with ThreadPoolExecutor(max_workers=4) as pool:
                replies = list(pool.map(lambda d: judging.call(record_prompt(d), parse_rubric), datas))
            out: list[tuple[dict[str, Any] | None, str]] = []
            failures = 0
            for value, error, detail in replies:
                failures = failures + 1 if error and error != "malformed" else 0
                if failures >= MAX_FAILURES_IN_A_ROW:
                    raise RuntimeError(f"the judge failed {failures} calls in a row: {detail}")
                out.append((value, f"{error}: {detail}"[:300] if error else ""))
            return out

        return score

    found = {}
    for key, spec in job.get("judges", {}).items():
        client = Client(spec["url"], spec["model"], api_key(spec), float(spec.get("timeout_s", 60)))
        found[int(key)] = scorer(Judging(client))
    return found


def token_counter(spec: dict[str, Any] | None) -> Any:
    """Tokens the base model sees for a record (rendered with its chat template), when the job names it."""
    if not spec:
        return None
    renderer = renderer_for(Path(spec["model_dir"]), spec.get("chat_template"))
    if renderer is None:
        raise RuntimeError("the dataset's base model has no tokenizer or chat template to count tokens with")
    return lambda kind, data: record_tokens(renderer, kind, data)


def name_finder(path: str | None) -> Any:
    if not path:
        return None
    from worker.cleaning.ner import NameFinder

    return NameFinder(Path(path))


def clean(job: dict[str, Any]) -> dict[str, Any]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    output = Path(job["output_dir"])
    partial = output.with_name(output.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    source = pq.ParquetFile(job["source"], pre_buffer=False)  # pre-buffering holds the whole file
    total = source.metadata.num_rows
    steps = job["steps"]
    skipped = skipped_steps(steps, total)
    embed = None
    if any(step["op"] == "semantic_dedup" for i, step in enumerate(steps) if i not in skipped):
        from worker.cleaning.embed import Embedder

        embed = Embedder()
    cleaner = Cleaner(
        steps,
        salt=job.get("salt", ""),
        eval_sets=eval_sets(job),
        judges=judge_fns(job),
        embed=embed,
        count_tokens=token_counter(job.get("tokenizer")),
        find_names=name_finder(job.get("ner_model")),
        regex_timeout=float(job.get("regex_timeout", 1.0)),
        skip=frozenset(skipped),
    )
    decision_schema = pa.schema([(name, getattr(pa, kind)()) for name, kind in DECISION_COLUMNS])
    modified_schema = pa.schema([("record_id", pa.string()), ("data", pa.string())])
    dropped = modified = done = 0
    per_step = [{"op": s["op"], "dropped": 0, "modified": 0, "reasons": Counter()} for s in steps]
    started, last = time.monotonic(), 0.0
    originals: set[str] = set()  # records kept while a duplicate of theirs was dropped
    with (
        pq.ParquetWriter(str(partial / "decisions.parquet"), decision_schema) as decisions,
        pq.ParquetWriter(str(partial / "modified.parquet"), modified_schema) as changes,
    ):
        size = JUDGED_BATCH if any(step["op"] == "judge" for step in steps) else BATCH
        for batch in source.iter_batches(batch_size=size, columns=["id", "kind", "split", "data"]):
            rows = batch.to_pylist()
            try:
                outcomes = cleaner.process_many(
                    [(r["id"], r["kind"], json.loads(r["data"])) for r in rows], [r["split"] for r in rows]
                )
            except PatternTimeout as exc:
                raise DataError(
                    "regex_timeout",
                    step=exc.step + 1,
                    pattern=exc.pattern[:200],
                    record=exc.record_id,
                    seconds=f"{exc.seconds:g}",
                ) from exc
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
                    if "duplicate_of" in d.evidence:
                        originals.add(d.evidence["duplicate_of"])
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
    write_kept(source, originals, partial / "kept.parquet")
    shutil.rmtree(output, ignore_errors=True)
    partial.rename(output)
    return {
        "records": total,
        "kept": total - dropped,
        "dropped": dropped,
        "modified": modified,
        "steps": [
            {**s, "reasons": dict(s["reasons"])}
            | ({"skipped": skipped[i]} if i in skipped else {})
            | (
                {"unjudged": cleaner.unjudged.get(i, 0), "judge_error": cleaner.last_judge_error.get(i, "")}
                if s["op"] == "judge"
                else {}
            )
            for i, s in enumerate(per_step)
        ],
        "seconds": round(time.monotonic() - started, 2),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }


def skipped_steps(steps: list[dict[str, Any]], total: int) -> dict[int, dict[str, Any]]:
    """The semantic dedup steps this dataset is too large for (its max_records), each with what running it
    would cost, so the review can say so."""
    from worker.cleaning.embed import RECORDS_PER_SECOND

    out = {}
    for i, step in enumerate(steps):
        limit = int(step["params"].get("max_records") or 0)
        if step["op"] == "semantic_dedup" and limit and total > limit:
            out[i] = {"records": total, "max_records": limit, "estimated_seconds": round(total / RECORDS_PER_SECOND)}
    return out


def write_kept(source: Any, ids: set[str], path: Path) -> None:
    """The text (first 1,000 characters) of each given record, for the review's side-by-side evidence."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema([("record_id", pa.string()), ("text", pa.string())])
    with pq.ParquetWriter(str(path), schema) as writer:
        for batch in source.iter_batches(batch_size=BATCH, columns=["id", "data"]):
            rows = [r for r in batch.to_pylist() if r["id"] in ids]
            if rows:
                texts = [joined(json.loads(r["data"]))[:1000] for r in rows]
                writer.write_table(pa.table({"record_id": [r["id"] for r in rows], "text": texts}, schema=schema))


def main(job: dict[str, Any]) -> int:
    return run_child(clean, job, error_code="cleaning_error")


if __name__ == "__main__":
    sys.exit(main(json.loads(sys.argv[1])))
