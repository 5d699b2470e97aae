"""Read an uploaded file into line-numbered items, reporting every unreadable line instead of raising.

Traps handled on purpose: lines are split on ``\\n`` bytes only (``str.splitlines`` would split a record
at U+2028), a UTF-8 BOM and CRLF endings are accepted, gzip is detected by its magic bytes, deep nesting
(``RecursionError``), ``NaN``/``Infinity``, duplicate keys and lone surrogates are rejected with a code,
and CSV is parsed strictly so an unterminated quote cannot swallow the rest of the file.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from app.datasets.messages import describe

FILE_TYPES = ("jsonl", "json", "csv", "parquet", "text")
EXCERPT = 200
TEXT_CHUNK_CHARS = 4000


@dataclass(frozen=True)
class Issue:
    line: int
    code: str
    params: dict[str, Any] = field(default_factory=dict)
    excerpt: str = ""
    source: str = ""  # "" for the main file, else the split whose separate file it comes from

    @property
    def message(self) -> str:
        return describe(self.code, self.params)


@dataclass(frozen=True)
class Item:
    line: int
    value: Any  # a dict for structured files, a str for text files


class _BadJSON(ValueError):
    def __init__(self, code: str, **params: Any) -> None:
        super().__init__(code)
        self.code = code
        self.params = params


def _reject_constant(name: str) -> Any:
    raise _BadJSON("json_nan", name=name)


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            raise _BadJSON("json_duplicate_key", key=key[:50])
        seen[key] = value
    return seen


def _check_strings(value: Any) -> None:
    """json.loads accepts escaped lone surrogates (\\ud800), which cannot be stored or tokenized."""
    stack = [value]
    while stack:
        current = stack.pop()
        if isinstance(current, str):
            try:
                current.encode("utf-8")
            except UnicodeEncodeError as exc:
                raise _BadJSON("json_lone_surrogate") from exc
        elif isinstance(current, dict):
            stack.extend(current.keys())
            stack.extend(current.values())
        elif isinstance(current, list):
            stack.extend(current)


def parse_json(text: str) -> Any:
    """Strict JSON: raises _BadJSON with a code for every way a line can be wrong."""
    try:
        value = json.loads(text, object_pairs_hook=_pairs, parse_constant=_reject_constant)
    except _BadJSON:
        raise
    except RecursionError as exc:
        raise _BadJSON("json_too_deep") from exc
    except json.JSONDecodeError as exc:
        raise _BadJSON("invalid_json", col=exc.colno, msg=exc.msg) from exc
    _check_strings(value)
    return value


def _excerpt(raw: bytes | str) -> str:
    text = raw.decode("utf-8", errors="replace") if isinstance(raw, bytes) else raw
    return text[:EXCERPT]


def guess_file_type(filename: str, head: bytes) -> str:
    name = filename.lower().removesuffix(".gz")
    for suffix, kind in (
        (".jsonl", "jsonl"),
        (".ndjson", "jsonl"),
        (".json", "json"),
        (".csv", "csv"),
        (".parquet", "parquet"),
        (".txt", "text"),
        (".md", "text"),
        (".markdown", "text"),
    ):
        if name.endswith(suffix):
            return kind
    if head.startswith(b"PAR1"):
        return "parquet"
    stripped = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    if stripped.startswith(b"["):
        return "json"
    if stripped.startswith(b"{"):
        return "jsonl"
    return "text"


def _lines(chunks: Iterable[bytes]) -> Iterator[tuple[int, bytes]]:
    """Numbered lines split on b"\\n" only; binary file iteration splits the same way, so a file can stream."""
    for number, raw in enumerate(chunks, start=1):
        line = raw.removesuffix(b"\n").removesuffix(b"\r")
        if number == 1:
            line = line.removeprefix(b"\xef\xbb\xbf")
        yield number, line


def read_jsonl(data: bytes | Iterable[bytes]) -> Iterator[Item | Issue]:
    for number, raw in _lines(data.split(b"\n") if isinstance(data, bytes) else data):
        if not raw.strip():
            continue
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            yield Issue(number, "encoding", excerpt=_excerpt(raw))
            continue
        try:
            yield Item(number, parse_json(text))
        except _BadJSON as exc:
            yield Issue(number, exc.code, exc.params, _excerpt(text))


def read_json_array(data: bytes) -> Iterator[Item | Issue]:
    """A JSON array, element by element, numbered by position (arrays are often written on one line)."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        yield Issue(1, "encoding")
        return
    decoder = json.JSONDecoder(object_pairs_hook=_pairs, parse_constant=_reject_constant)
    position = len(text) - len(text.lstrip())
    if text[position : position + 1] != "[":
        yield Issue(1, "json_not_array", excerpt=_excerpt(text))
        return
    position += 1
    line = 0
    while True:
        while position < len(text) and text[position] in " \t\r\n,":
            position += 1
        if position >= len(text):
            yield Issue(line + 1, "json_truncated", {"msg": "the array is not closed with ]"})
            return
        if text[position] == "]":
            return
        line += 1
        try:
            value, end = decoder.raw_decode(text, position)
            _check_strings(value)
        except RecursionError:
            yield Issue(line, "json_too_deep")
            return
        except _BadJSON as exc:
            yield Issue(line, exc.code, exc.params, _excerpt(text[position : position + EXCERPT]))
            return
        except json.JSONDecodeError as exc:
            yield Issue(line, "json_truncated", {"msg": exc.msg}, _excerpt(text[position : position + EXCERPT]))
            return
        yield Item(line, value)
        position = end


def read_csv(data: bytes) -> Iterator[Item | Issue]:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        yield Issue(1, "encoding")
        return
    csv.field_size_limit(64 * 1024 * 1024)
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        header = next(reader)
    except StopIteration:
        return
    except csv.Error as exc:
        yield Issue(1, "csv_error", {"msg": str(exc)})
        return
    names = [h.strip() for h in header]
    while True:
        line = reader.line_num + 1
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            yield Issue(line, "csv_error", {"msg": str(exc)})
            return
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != len(names):
            yield Issue(line, "csv_columns", {"got": len(row), "want": len(names)}, _excerpt(",".join(row)))
            continue
        yield Item(line, dict(zip(names, row, strict=True)))


def read_parquet(path: Path) -> Iterator[Item | Issue]:
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(str(path))
    except Exception as exc:
        yield Issue(1, "parquet_error", {"msg": str(exc)[:200]})
        return
    row = 0
    for batch in parquet.iter_batches(batch_size=2048):
        for record in batch.to_pylist():
            row += 1
            yield Item(row, record)


def read_text(data: bytes) -> Iterator[Item | Issue]:
    """Raw text for continued pre-training: paragraphs gathered into chunks, each with its first line."""
    text = data.decode("utf-8-sig", errors="replace")
    chunk: list[str] = []
    size = 0
    start = 1
    for number, raw in enumerate(text.split("\n"), start=1):
        line = raw.removesuffix("\r")
        if not chunk and not line.strip():
            continue
        if not chunk:
            start = number
        chunk.append(line)
        size += len(line) + 1
        if size >= TEXT_CHUNK_CHARS and not line.strip():
            yield Item(start, "\n".join(chunk).strip())
            chunk, size = [], 0
    if chunk and "\n".join(chunk).strip():
        yield Item(start, "\n".join(chunk).strip())


def open_upload(path: Path) -> IO[bytes]:
    with path.open("rb") as probe:
        gzipped = probe.read(2) == b"\x1f\x8b"
    if gzipped:
        return gzip.open(path, "rb")  # type: ignore[return-value]
    return path.open("rb")


def sniff_file_type(path: Path, filename: str) -> str:
    """The file type from the name, else from the first bytes after decompression."""
    with open_upload(path) as handle:
        try:
            head = handle.read(4096)
        except (OSError, EOFError):
            head = b""
    return guess_file_type(filename, head)


def read_items(path: Path, file_type: str) -> Iterator[Item | Issue]:
    """JSONL streams line by line (bounded memory); other text formats are read whole."""
    if file_type == "parquet":
        yield from read_parquet(path)
        return
    try:
        with open_upload(path) as handle:
            if file_type == "jsonl":
                yield from read_jsonl(handle)
            else:
                yield from read_bytes(handle.read(), file_type)
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        yield Issue(1, "encoding", {"msg": str(exc)[:200]})


def read_bytes(data: bytes, file_type: str) -> Iterator[Item | Issue]:
    readers = {"jsonl": read_jsonl, "json": read_json_array, "csv": read_csv, "text": read_text}
    yield from readers[file_type](data)
