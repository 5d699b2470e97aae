"""Child process: validate an upload and stage its canonical records as Parquet (no torch).

Prints JSON progress lines for the supervisor (see worker/training/protocol.py). Outputs, in ``dest``:
``records.parquet`` (id, line, kind, split, data) and ``issues.jsonl`` (line, code, params, excerpt).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from app.datasets import splits
from app.datasets.reading import Issue, open_upload, read_items, sniff_file_type
from app.datasets.records import record_schema
from app.datasets.stats import Stats, record_plain_text
from app.datasets.template import record_tokens, renderer_for
from app.datasets.validation import Report, validate_items
from worker.training.protocol import emit, exit_with_parent, fail, progress

BATCH = 5000


def _count_lines(path: Path, file_type: str) -> int:
    if file_type == "parquet":
        import pyarrow.parquet as pq

        try:
            return int(pq.ParquetFile(str(path)).metadata.num_rows) or 1
        except Exception:
            return 1
    count = 0
    with open_upload(path) as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            count += block.count(b"\n")
    return max(count, 1)


def _main_file_ratios(ratios: dict[str, float], covered: set[str]) -> dict[str, float]:
    """Splits that come from their own file take no records from the main file."""
    return splits.normalize_ratios({name: (0.0 if name in covered else value) for name, value in ratios.items()})


def run(spec: dict[str, Any]) -> dict[str, Any]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    dest = Path(spec["dest"])
    dest.mkdir(parents=True, exist_ok=True)
    # (path, file name, forced split, source label): the main file first, then any separate split files
    files: list[tuple[Path, str, str | None]] = [(Path(spec["upload_path"]), spec["filename"], None)]
    files += [(Path(f["path"]), f["filename"], f["split"]) for f in spec.get("split_files") or []]
    ratios = _main_file_ratios(splits.normalize_ratios(spec["split_ratios"]), {f[2] for f in files if f[2]})
    renderer = renderer_for(Path(spec["model_dir"]), spec.get("chat_template")) if spec.get("model_dir") else None
    context = spec.get("context_length")
    main_type = spec.get("file_type") or sniff_file_type(files[0][0], files[0][1])
    total = sum(_count_lines(path, spec.get("file_type") or sniff_file_type(path, name)) for path, name, _s in files)

    report = Report(file_type=main_type)
    stats = Stats()
    schema = record_schema()
    rows: dict[str, list[Any]] = {name: [] for name in schema.names}
    started, last_report, lines_before = time.monotonic(), 0.0, 0
    with pq.ParquetWriter(str(dest / "records.parquet.partial"), schema) as writer:

        def flush() -> None:
            if rows["id"]:
                writer.write_table(pa.table(rows, schema=schema))
                for column in rows.values():
                    column.clear()

        for path, filename, forced in files:
            source = forced or ""
            report.source = source
            file_type = main_type if not source else (spec.get("file_type") or sniff_file_type(path, filename))
            # a split file must use the main file's format: a mismatch is reported, not silently re-detected
            record_format = spec.get("record_format") or (report.record_format if source else None)
            last_line = 0
            for entry in validate_items(
                read_items(path, file_type), report, record_format=record_format, mapping=spec.get("mapping")
            ):
                last_line = entry.line
                counts = [record_tokens(renderer, record.kind, record.data) for record in entry.records]
                longest = max((c for c in counts if c is not None), default=0)
                if context and longest > context:
                    report.withdraw(entry, Issue(entry.line, "too_long", {"tokens": longest, "context": context}))
                    continue
                for number, (record, tokens) in enumerate(zip(entry.records, counts, strict=True)):
                    local = f"{entry.line}" if len(entry.records) == 1 else f"{entry.line}.{number + 1}"
                    record_id = f"{source}:{local}" if source else local
                    split = forced or splits.assign(record_id, spec["seed"], ratios)
                    rows["id"].append(record_id)
                    rows["line"].append(entry.line)
                    rows["kind"].append(record.kind)
                    rows["split"].append(split)
                    rows["file"].append(source)
                    rows["data"].append(json.dumps(record.data, ensure_ascii=False))
                    stats.add(record.kind, split, record.data, record_plain_text(record.kind, record.data), tokens)
                if len(rows["id"]) >= BATCH:
                    flush()
                now = time.monotonic()
                if now - last_report > 0.5:
                    last_report = now
                    done = min(0.99, (lines_before + entry.line) / total)
                    progress(done, "validated_lines", done=f"{lines_before + entry.line:,}", total=f"{total:,}")
            lines_before += last_line
        flush()
    with (dest / "issues.jsonl").open("w") as issues:
        for issue in report.issues:
            issues.write(
                json.dumps(
                    {
                        "line": issue.line,
                        "code": issue.code,
                        "params": issue.params,
                        "excerpt": issue.excerpt,
                        "source": issue.source,
                    },
                    ensure_ascii=False,
                )
                + "\n"
            )
    (dest / "records.parquet.partial").rename(dest / "records.parquet")
    return {
        **report.summary(),
        "stats": stats.as_dict(),
        "seconds": round(time.monotonic() - started, 2),
        "issues_stored": len(report.issues),
        "split_files": sorted(f[2] for f in files if f[2]),
    }


def main(spec: dict[str, Any]) -> int:
    exit_with_parent()
    try:
        result = run(spec)
    except OSError as exc:
        fail("data", "upload_unreadable", detail=str(exc))
        return 1
    emit(result=result)
    return 0


if __name__ == "__main__":
    sys.exit(main(json.loads(sys.argv[1])))
