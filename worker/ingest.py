"""Child process: validate an upload and stage its canonical records as Parquet (no torch).

Prints JSON progress lines for the supervisor (see worker/protocol.py). Outputs, in ``dest``:
``records.parquet`` (id, line, kind, split, data) and ``issues.jsonl`` (line, code, params, excerpt).
"""

from __future__ import annotations

import json
import os
import resource
import signal
import sys
import time
from pathlib import Path
from typing import Any

from app.core.config import get_settings
from app.datasets import splits
from app.datasets.bounded import Limits, UploadLimit, open_upload
from app.datasets.reading import Issue, detect_text_split, read_items, sniff_file_type
from app.datasets.records import record_schema
from app.datasets.stats import Stats, record_plain_text
from app.datasets.template import record_tokens, renderer_for
from app.datasets.validation import Report, validate_items
from worker.protocol import emit, exit_with_parent, fail, progress

BATCH = 5000
BATCH_BYTES = 32 * 1024 * 1024  # large records are written sooner, so memory stays bounded


def _count_lines(path: Path, file_type: str, limits: Limits) -> int:
    if file_type == "parquet":
        import pyarrow.parquet as pq

        try:
            return int(pq.ParquetFile(str(path)).metadata.num_rows) or 1
        except Exception:
            return 1
    # this first pass decompresses at C speed, so a decompression bomb is refused (UploadLimit) in a fraction of
    # a second, before a single record of it is parsed
    count = 0
    with open_upload(path, limits) as handle:
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
    limits = Limits.from_settings()
    total = sum(
        _count_lines(path, spec.get("file_type") or sniff_file_type(path, name), limits) for path, name, _s in files
    )

    report = Report(file_type=main_type)
    if main_type == "text":
        report.text_split = spec.get("text_split") or detect_text_split(files[0][0], files[0][1])
    stats = Stats()
    schema = record_schema()
    rows: dict[str, list[Any]] = {name: [] for name in schema.names}
    started, last_report, lines_before = time.monotonic(), 0.0, 0
    held = 0  # characters of record data waiting to be written
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
                read_items(path, file_type, limits, report.text_split),
                report,
                record_format=record_format,
                mapping=spec.get("mapping"),
            ):
                last_line = entry.line
                counts = [record_tokens(renderer, record.kind, record.data, context) for record in entry.records]
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
                held += sum(len(text) for text in rows["data"][-len(entry.records) :]) if entry.records else 0
                if len(rows["id"]) >= BATCH or held >= BATCH_BYTES:
                    flush()
                    held = 0
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


def _limit_resources() -> None:
    """A bomb that slips past the readers' limits ends as a clear failed upload, not as the kernel's OOM
    killer or a worker slot held for hours: the child's address space and CPU time are capped."""
    settings = get_settings()
    memory = settings.validation_memory_mb * 1024 * 1024
    _soft, hard = resource.getrlimit(resource.RLIMIT_DATA)
    if hard == resource.RLIM_INFINITY or memory < hard:
        resource.setrlimit(resource.RLIMIT_DATA, (memory, hard))
    seconds = settings.validation_cpu_seconds
    _soft, hard = resource.getrlimit(resource.RLIMIT_CPU)
    if hard == resource.RLIM_INFINITY or seconds < hard:
        resource.setrlimit(resource.RLIMIT_CPU, (seconds, hard if hard != resource.RLIM_INFINITY else seconds + 30))

    def out_of_time(_signum: int, _frame: Any) -> None:
        fail("data", "validation_cpu", limit=seconds, setting="REFINERY_VALIDATION_CPU_SECONDS")
        os._exit(1)

    signal.signal(signal.SIGXCPU, out_of_time)


def main(spec: dict[str, Any]) -> int:
    exit_with_parent()
    _limit_resources()
    try:
        result = run(spec)
    except UploadLimit as exc:
        fail("data", exc.code, **exc.params)
        return 1
    except MemoryError:
        limit = get_settings().validation_memory_mb
        fail("data", "validation_memory", limit=limit, setting="REFINERY_VALIDATION_MEMORY_MB")
        return 1
    except OSError as exc:
        fail("data", "upload_unreadable", detail=str(exc))
        return 1
    emit(result=result)
    return 0


if __name__ == "__main__":
    sys.exit(main(json.loads(sys.argv[1])))
