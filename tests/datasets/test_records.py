"""Paging a version reads only the row groups a page needs, and returns exactly that page."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from app.datasets.records import _page_by_row_groups, record_schema

SCHEMA = record_schema()


@pytest.mark.parametrize(("start", "size"), [(0, 5), (5, 5), (6, 10), (30, 10), (35, 5), (33, 2)])
def test_pages_across_row_group_edges(tmp_path: Path, start: int, size: int) -> None:
    path = tmp_path / "v.parquet"
    with pq.ParquetWriter(str(path), SCHEMA) as writer:
        for batch in range(5):  # five row groups of seven rows
            lines = list(range(batch * 7, batch * 7 + 7))
            writer.write_table(
                pa.table(
                    {
                        "id": [str(i) for i in lines],
                        "line": lines,
                        "kind": ["text"] * 7,
                        "split": ["train"] * 7,
                        "file": [""] * 7,
                        "data": [json.dumps({"text": f"t{i}"}) for i in lines],
                    },
                    schema=SCHEMA,
                )
            )
    rows, total = _page_by_row_groups(pq.ParquetFile(str(path)), start, size)
    assert total == 35
    assert [r.line for r in rows] == list(range(start, min(35, start + size)))
    assert all(r.data == {"text": f"t{r.line}"} for r in rows)
