"""Issue 25, finding 2: decompression and size bombs from any member. Each used to take gigabytes or minutes
of one validation child (a 1 MB .json.gz expanding to a 1 GiB string was killed by the kernel three times; a
sub-kilobyte Parquet dictionary bomb used 700 MB; a 254 KB gzip of blank lines cost 107 s of CPU). Now each
ends as a failed upload (or a refused line) with the limit and the setting named, in bounded memory and time,
and the worker lives on. The child is run as the worker runs it; its peak memory is read by a fresh parent."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.conftest import csrf_of, make_admin
from worker import lifecycle

MB = 1 << 20
MEASURE = """
import resource, subprocess, sys
done = subprocess.run(sys.argv[1:], capture_output=True, text=True)
print(done.stdout)
print("PEAK_KB", resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
"""


def _gzip_bomb(path: Path) -> Path:
    """About 1 MB that expands to a JSON array holding one 1 GiB string."""
    with gzip.open(path, "wb", compresslevel=9) as out:
        out.write(b'[{"text": "')
        block = b"a" * MB
        for _ in range(1024):
            out.write(block)
        out.write(b'"}]')
    return path


def _repeated_records(path: Path) -> Path:
    """About 1 MB of gzip that expands to 1 GiB of the same short valid record, line after line."""
    line = json.dumps({"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]})
    block = ((line + "\n") * (MB // (len(line) + 1))).encode()
    with gzip.open(path, "wb", compresslevel=9) as out:
        for _ in range(1024):
            out.write(block)
    return path


def _parquet_bomb(path: Path) -> Path:
    """Half a kilobyte: a dictionary page with one 1 MiB value, indexed by 20,000 rows (20 GB decoded)."""
    column = pa.DictionaryArray.from_arrays(pa.array([0] * 20_000, type=pa.int32()), pa.array(["a" * MB]))
    pq.write_table(pa.table({"text": column}), str(path), compression="zstd")
    return path


def _blank_lines(path: Path) -> Path:
    """A 254 KB gzip of 250 MB of newlines."""
    with gzip.open(path, "wb", compresslevel=9) as out:
        for _ in range(250):
            out.write(b"\n" * MB)
    return path


def _endless_line(path: Path) -> Path:
    """A 100 MB line with no end (uncompressed, so only the record limit applies)."""
    with path.open("wb") as out:
        out.write(b'{"text": "')
        for _ in range(100):
            out.write(b"a" * MB)
    return path


def _one_huge_record(path: Path) -> Path:
    """One valid 32 MB record, then a normal one."""
    record = {"messages": [{"role": "user", "content": "Summarise."}, {"role": "assistant", "content": "x" * 32 * MB}]}
    normal = {"messages": [{"role": "user", "content": "Hi?"}, {"role": "assistant", "content": "Hello."}]}
    path.write_text(json.dumps(record) + "\n" + json.dumps(normal) + "\n")
    return path


def _validate(upload: Path, tmp_path: Path) -> tuple[dict[str, Any], float, float]:
    """(the child's last message, its peak RSS in MB, its CPU seconds), run as the worker runs it."""
    spec = {
        "upload_path": str(upload),
        "filename": upload.name,
        "split_ratios": {"train": 1.0},
        "seed": 1,
        "dest": str(tmp_path / f"staged-{upload.name}"),
    }
    started = time.process_time()
    argv = [sys.executable, "-c", MEASURE, sys.executable, "-m", "worker.ingest", json.dumps(spec)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300, check=True)
    children = time.process_time() - started  # this process's own time (the child's is in the parent's)
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    peak_kb = int(lines[-1].split()[1])
    messages = [json.loads(line) for line in lines[:-1] if line.startswith("{")]
    return messages[-1], peak_kb / 1024, children


@pytest.mark.parametrize(
    ("make", "code", "setting"),
    [
        (_gzip_bomb, "decompression_ratio", "REFINERY_MAX_DECOMPRESSION_RATIO"),
        (_repeated_records, "decompression_ratio", "REFINERY_MAX_DECOMPRESSION_RATIO"),
        (_parquet_bomb, "decompression_ratio", "REFINERY_MAX_DECOMPRESSION_RATIO"),
        (_blank_lines, "decompression_ratio", "REFINERY_MAX_DECOMPRESSION_RATIO"),
    ],
    ids=["gzip-1GiB-string", "gzip-1GiB-of-records", "parquet-dictionary", "gzip-blank-lines"],
)
def test_a_bomb_is_refused_with_the_limit_named_in_bounded_memory(
    tmp_path: Path, make: Any, code: str, setting: str
) -> None:
    suffix = {
        "_gzip_bomb": "bomb.json.gz",
        "_repeated_records": "bomb.jsonl.gz",
        "_parquet_bomb": "bomb.parquet",
        "_blank_lines": "blank.jsonl.gz",
    }
    upload = make(tmp_path / suffix[make.__name__])
    started = time.monotonic()
    message, peak_mb, _ = _validate(upload, tmp_path)
    seconds = time.monotonic() - started
    assert message["error"]["kind"] == "data" and message["error"]["code"] == code, message
    assert message["error"]["params"]["setting"] == setting
    assert peak_mb < 500, peak_mb  # was several GB
    assert seconds < 60, seconds  # the blank lines took 107 s of CPU


@pytest.mark.parametrize(
    ("make", "name"),
    [(_endless_line, "line.jsonl"), (_one_huge_record, "huge.jsonl")],
    ids=["100MB-line-no-end", "32MB-record"],
)
def test_an_oversized_record_is_reported_on_its_line_without_being_held(tmp_path: Path, make: Any, name: str) -> None:
    upload = make(tmp_path / name)
    message, peak_mb, _ = _validate(upload, tmp_path)
    result = message["result"]
    issues = [
        json.loads(line) for line in (tmp_path / f"staged-{upload.name}" / "issues.jsonl").read_text().splitlines()
    ]
    assert issues[0]["line"] == 1 and issues[0]["code"] == "record_too_large", issues
    assert result["invalid_lines"] == 1 and result["records"] == (1 if make is _one_huge_record else 0), result
    assert peak_mb < 400, peak_mb


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_bomb_uploaded_through_the_api_fails_with_its_message_and_the_next_upload_validates(
    client: Any, tmp_path: Path
) -> None:
    make_admin(client)
    client.headers["X-CSRF-Token"] = csrf_of(client, "/models")
    with _repeated_records(tmp_path / "bomb.jsonl.gz").open("rb") as handle:
        dataset = client.post("/api/v1/datasets", files={"file": ("bomb.jsonl.gz", handle)}).json()
    lifecycle.execute(dataset["validation_run"]["id"])
    run = client.get(f"/api/v1/runs/{dataset['validation_run']['id']}").json()
    assert run["status"] == "failed" and run["attempt"] == 1, run  # refused once, not retried three times
    assert "decompression bombs" in run["error_message"] and "REFINERY_MAX_DECOMPRESSION_RATIO" in run["error_message"]
    shown = client.get(f"/api/v1/datasets/{dataset['id']}").json()
    assert shown["status"] == "failed" and "REFINERY_MAX_DECOMPRESSION_RATIO" in (shown["error_message"] or "")
    page = client.get(f"/datasets/{dataset['id']}")
    assert "REFINERY_MAX_DECOMPRESSION_RATIO" in page.text
    fine = tmp_path / "fine.jsonl"
    fine.write_text(json.dumps({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}))
    with fine.open("rb") as handle:
        ok = client.post("/api/v1/datasets", files={"file": ("fine.jsonl", handle)}).json()
    lifecycle.execute(ok["validation_run"]["id"])
    assert client.get(f"/api/v1/datasets/{ok['id']}").json()["status"] == "ready"
