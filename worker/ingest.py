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
from app.datasets.stats import Stats, record_plain_text
from app.datasets.template import ChatRenderer, TemplateRenderError, record_text, renderer_for
from app.datasets.validation import Report, validate_items
from worker.training.protocol import emit, fail, progress

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


def _tokens(renderer: ChatRenderer | None, kind: str, data: dict[str, Any]) -> int | None:
    if renderer is None:
        return None
    if kind == "text":
        return renderer.count(data["text"])
    return max(renderer.count(renderer.render(conversation)) for conversation in record_text(kind, data))


def run(spec: dict[str, Any]) -> dict[str, Any]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    source = Path(spec["upload_path"])
    dest = Path(spec["dest"])
    dest.mkdir(parents=True, exist_ok=True)
    file_type = spec.get("file_type") or sniff_file_type(source, spec["filename"])
    ratios = splits.normalize_ratios(spec["split_ratios"])
    renderer = renderer_for(Path(spec["model_dir"]), spec.get("chat_template")) if spec.get("model_dir") else None
    context = spec.get("context_length")
    total = _count_lines(source, file_type)

    report = Report(file_type=file_type)
    stats = Stats()
    schema = pa.schema(
        [
            ("id", pa.string()),
            ("line", pa.int64()),
            ("kind", pa.string()),
            ("split", pa.string()),
            ("data", pa.string()),
        ]
    )
    rows: dict[str, list[Any]] = {name: [] for name in schema.names}
    started, last_report = time.monotonic(), 0.0
    with (
        pq.ParquetWriter(str(dest / "records.parquet.partial"), schema) as writer,
        (dest / "issues.jsonl").open("w") as issues,
    ):

        def flush() -> None:
            if rows["id"]:
                writer.write_table(pa.table(rows, schema=schema))
                for column in rows.values():
                    column.clear()

        accepted = validate_items(
            read_items(source, file_type), report, record_format=spec.get("record_format"), mapping=spec.get("mapping")
        )
        for entry in accepted:
            counts = [_safe_tokens(renderer, record.kind, record.data) for record in entry.records]
            longest = max((c for c in counts if c is not None), default=0)
            if context and longest > context:
                report.withdraw(entry, Issue(entry.line, "too_long", {"tokens": longest, "context": context}))
                continue
            for number, (record, tokens) in enumerate(zip(entry.records, counts, strict=True)):
                record_id = f"{entry.line}" if len(entry.records) == 1 else f"{entry.line}.{number + 1}"
                split = splits.assign(record_id, spec["seed"], ratios)
                rows["id"].append(record_id)
                rows["line"].append(entry.line)
                rows["kind"].append(record.kind)
                rows["split"].append(split)
                rows["data"].append(json.dumps(record.data, ensure_ascii=False))
                stats.add(record.kind, split, record.data, record_plain_text(record.kind, record.data), tokens)
            if len(rows["id"]) >= BATCH:
                flush()
            now = time.monotonic()
            if now - last_report > 0.5:
                last_report = now
                done = min(0.99, entry.line / total)
                progress(done, f"Validated {entry.line:,} of about {total:,} lines")
        flush()
        for issue in report.issues:
            issues.write(
                json.dumps(
                    {"line": issue.line, "code": issue.code, "params": issue.params, "excerpt": issue.excerpt},
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
    }


def _safe_tokens(renderer: ChatRenderer | None, kind: str, data: dict[str, Any]) -> int | None:
    try:
        return _tokens(renderer, kind, data)
    except TemplateRenderError:
        return None


def main(spec: dict[str, Any]) -> int:
    try:
        result = run(spec)
    except OSError as exc:
        fail("data", f"The upload could not be read ({exc}); upload the file again.")
        return 1
    emit(result=result)
    return 0


if __name__ == "__main__":
    sys.exit(main(json.loads(sys.argv[1])))
