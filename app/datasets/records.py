"""Reading a stored version: paged, searchable preview, validation issues, JSONL export."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from app.datasets.messages import describe
from app.datasets.storage import artifact_path
from app.db.models import DatasetVersion

PAGE_SIZE = 20
RECORD_COLUMNS = (
    ("id", "string"),
    ("line", "int64"),
    ("kind", "string"),
    ("split", "string"),
    ("file", "string"),
    ("data", "string"),
)


def record_schema() -> Any:
    """The Parquet schema of a dataset version: one canonical record per row, ``data`` as JSON."""
    import pyarrow as pa

    return pa.schema([(name, getattr(pa, kind)()) for name, kind in RECORD_COLUMNS])


@dataclass(frozen=True)
class RecordRow:
    id: str
    line: int
    kind: str
    split: str
    data: dict[str, Any]
    file: str = ""  # "" for the main upload, else the split whose separate file the record came from


def _row(r: dict[str, Any]) -> RecordRow:
    return RecordRow(r["id"], r["line"], r["kind"], r["split"], json.loads(r["data"]), r.get("file") or "")


def page_records(
    version: DatasetVersion, *, page: int = 1, query: str = "", split: str = "", page_size: int = PAGE_SIZE
) -> tuple[list[RecordRow], int]:
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    path = str(artifact_path(version.storage_key))
    if not split and not query:
        return _page_by_row_groups(pq.ParquetFile(path), (max(1, page) - 1) * page_size, page_size)
    table = pq.read_table(
        path, columns=["id", "line", "kind", "split", "file", "data"] if "file" in pq.read_schema(path).names else None
    )
    if split:
        table = table.filter(pc.equal(table["split"], split))
    if query:
        # data holds the record as JSON with unescaped Unicode, so substring search works for Chinese too
        needle = json.dumps(query, ensure_ascii=False)[1:-1]
        table = table.filter(pc.match_substring(table["data"], needle, ignore_case=True))
    total = table.num_rows
    start = max(0, (page - 1) * page_size)
    rows = table.slice(start, page_size).to_pylist()
    return [_row(r) for r in rows], total


def _page_by_row_groups(parquet: Any, start: int, size: int) -> tuple[list[RecordRow], int]:
    """Read only the row groups that hold rows [start, start + size) (versions are written in batches)."""
    total = parquet.metadata.num_rows
    rows: list[dict[str, Any]] = []
    offset = 0
    for group in range(parquet.num_row_groups):
        count = parquet.metadata.row_group(group).num_rows
        if offset + count > start and offset < start + size:
            table = parquet.read_row_group(group)
            lo = max(0, start - offset)
            rows += table.slice(lo, start + size - offset - lo).to_pylist()
        offset += count
        if offset >= start + size:
            break
    return [_row(r) for r in rows[:size]], total


def get_record(version: DatasetVersion, record_id: str) -> RecordRow | None:
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    table = pq.read_table(str(artifact_path(version.storage_key)))
    rows = table.filter(pc.equal(table["id"], record_id)).slice(0, 1).to_pylist()
    if not rows:
        return None
    return _row(rows[0])


def iter_jsonl(version: DatasetVersion) -> Iterator[bytes]:
    import pyarrow.parquet as pq

    parquet = pq.ParquetFile(str(artifact_path(version.storage_key)))
    for batch in parquet.iter_batches(batch_size=2000):
        lines = []
        for row in batch.to_pylist():
            record = {
                "id": row["id"],
                "source_line": row["line"],
                "kind": row["kind"],
                "split": row["split"],
                **json.loads(row["data"]),
            }
            lines.append(json.dumps(record, ensure_ascii=False))
        yield ("\n".join(lines) + "\n").encode("utf-8")


@dataclass(frozen=True)
class IssueRow:
    line: int
    code: str
    message: str
    excerpt: str
    source: str = ""


def page_issues(staging_key: str, *, page: int = 1, code: str = "", page_size: int = 50) -> tuple[list[IssueRow], int]:
    path = artifact_path(f"{staging_key}/issues.jsonl")
    if not path.is_file():
        return [], 0
    rows = []
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            item = json.loads(line)
            if code and item["code"] != code:
                continue
            rows.append(item)
    start = max(0, (page - 1) * page_size)
    chosen = rows[start : start + page_size]
    issues = [
        IssueRow(i["line"], i["code"], describe(i["code"], i["params"]), i["excerpt"], i.get("source", ""))
        for i in chosen
    ]
    return issues, len(rows)
