"""Read an uploaded file into line-numbered items, reporting every unreadable line instead of raising.

Traps handled on purpose: lines are split on ``\\n`` bytes only (``str.splitlines`` would split a record
at U+2028), a UTF-8 BOM and CRLF endings are accepted, gzip is detected by its magic bytes, deep nesting
(``RecursionError``), ``NaN``/``Infinity``, duplicate keys and lone surrogates are rejected with a code,
and CSV is parsed strictly so an unterminated quote cannot swallow the rest of the file.
"""

from __future__ import annotations

import codecs
import csv
import gzip
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from app.datasets.bounded import CHUNK, Guarded, Limits, UploadLimit, bounded_lines, open_upload, source_of
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


def _too_large(line: int, limits: Limits) -> Issue:
    return Issue(line, "record_too_large", {"limit": f"{limits.max_record_bytes:,}"})


def read_jsonl(data: bytes | IO[bytes] | Guarded, limits: Limits | None = None) -> Iterator[Item | Issue]:
    limits = limits or Limits()
    for number, raw in bounded_lines(source_of(data), limits.max_record_bytes):
        if raw is None:
            yield _too_large(number, limits)
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


_SPACE = frozenset(" \t\r\n")
_BETWEEN = frozenset(" \t\r\n,")


def read_json_array(data: bytes | IO[bytes] | Guarded, limits: Limits | None = None) -> Iterator[Item | Issue]:
    """A JSON array, element by element, numbered by position (arrays are often written on one line). Read in
    chunks: only the element being decoded is held, and one longer than the record limit is refused."""
    limits = limits or Limits()
    handle = source_of(data)
    utf8 = codecs.getincrementaldecoder("utf-8-sig")()
    decoder = json.JSONDecoder(object_pairs_hook=_pairs, parse_constant=_reject_constant)
    buf, pos, eof = "", 0, False

    def fill() -> bool:
        """One more chunk into the buffer, dropping what was consumed; False once the file has ended."""
        nonlocal buf, pos, eof
        if eof:
            return False
        chunk = handle.read(CHUNK)
        eof = not chunk
        buf = buf[pos:] + utf8.decode(chunk, final=eof)
        pos = 0
        return True

    def skip(chars: frozenset[str]) -> None:
        nonlocal pos
        while True:
            while pos < len(buf) and buf[pos] in chars:
                pos += 1
            if pos < len(buf) or not fill():
                return

    try:
        skip(_SPACE)
    except UnicodeDecodeError:
        yield Issue(1, "encoding")
        return
    if buf[pos : pos + 1] != "[":
        yield Issue(1, "json_not_array", excerpt=_excerpt(buf[pos : pos + EXCERPT]))
        return
    pos += 1
    line = 0
    try:
        while True:
            skip(_BETWEEN)
            if pos >= len(buf):
                yield Issue(line + 1, "json_truncated", {"msg": "the array is not closed with ]"})
                return
            if buf[pos] == "]":
                return
            line += 1
            while True:
                try:
                    value, end = decoder.raw_decode(buf, pos)
                    if end >= len(buf) and not eof and fill():  # a number cut at the chunk's end: read on
                        continue
                    _check_strings(value)
                    break
                except RecursionError:
                    yield Issue(line, "json_too_deep")
                    return
                except _BadJSON as exc:
                    yield Issue(line, exc.code, exc.params, _excerpt(buf[pos : pos + EXCERPT]))
                    return
                except json.JSONDecodeError as exc:
                    cut = exc.pos >= len(buf) - 8 or exc.msg.startswith("Unterminated string")
                    if cut and len(buf) - pos > limits.max_record_bytes:
                        yield _too_large(line, limits)
                        return
                    if cut and fill():
                        continue
                    yield Issue(line, "json_truncated", {"msg": exc.msg}, _excerpt(buf[pos : pos + EXCERPT]))
                    return
            if end - pos > limits.max_record_bytes:
                yield _too_large(line, limits)
            else:
                yield Item(line, value)
            pos = end
    except UnicodeDecodeError:
        yield Issue(line + 1, "encoding")


class _LineTooLarge(Exception):
    def __init__(self, line: int) -> None:
        self.line = line


def _text_lines(handle: IO[bytes] | Guarded, limits: Limits) -> Iterator[str]:
    """Decoded lines with their endings, for the csv module; a line past the record limit stops the file."""
    for number, raw in bounded_lines(handle, limits.max_record_bytes, blank=True):
        if raw is None:
            raise _LineTooLarge(number)
        yield raw.decode("utf-8") + "\n"


def read_csv(data: bytes | IO[bytes] | Guarded, limits: Limits | None = None) -> Iterator[Item | Issue]:
    limits = limits or Limits()
    csv.field_size_limit(limits.max_record_bytes)
    reader = csv.reader(_text_lines(source_of(data), limits), strict=True)
    try:
        header = next(reader)
    except StopIteration:
        return
    except UnicodeDecodeError:
        yield Issue(1, "encoding")
        return
    except _LineTooLarge as exc:
        yield _too_large(exc.line, limits)
        return
    except csv.Error as exc:
        yield Issue(1, "csv_error", {"msg": str(exc)})
        return
    names = [h.strip() for h in header]
    if len(names) > limits.max_columns:
        raise UploadLimit(
            "too_many_columns", columns=len(names), limit=limits.max_columns, setting="REFINERY_MAX_COLUMNS"
        )
    while True:
        line = reader.line_num + 1
        try:
            row = next(reader)
        except StopIteration:
            return
        except UnicodeDecodeError:
            yield Issue(line, "encoding")
            return
        except _LineTooLarge as exc:
            yield _too_large(exc.line, limits)
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


def _depth(kind: Any) -> int:
    import pyarrow as pa

    if pa.types.is_struct(kind):
        return 1 + max((_depth(kind.field(i).type) for i in range(kind.num_fields)), default=0)
    if pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind):
        return 1 + _depth(kind.value_type)
    if pa.types.is_map(kind):
        return 1 + max(_depth(kind.key_type), _depth(kind.item_type))
    return 0


def read_parquet(path: Path, limits: Limits | None = None) -> Iterator[Item | Issue]:
    """Row by row in small batches. Checked first: the columns and nesting; while reading, the bytes the
    rows expand to (a dictionary page repeated by run-length codes can turn a kilobyte into gigabytes)."""
    import pyarrow.parquet as pq

    limits = limits or Limits()
    try:
        parquet = pq.ParquetFile(str(path), pre_buffer=False)
        schema = parquet.schema_arrow
    except Exception as exc:
        yield Issue(1, "parquet_error", {"msg": str(exc)[:200]})
        return
    if len(schema) > limits.max_columns:
        raise UploadLimit(
            "too_many_columns", columns=len(schema), limit=limits.max_columns, setting="REFINERY_MAX_COLUMNS"
        )
    deepest = max((_depth(field.type) for field in schema), default=0)
    if deepest > limits.max_depth:
        raise UploadLimit("parquet_too_deep", depth=deepest, limit=limits.max_depth)
    stored = path.stat().st_size
    cap, which = limits.expansion_cap(stored)
    expanded = 0
    row = 0
    try:
        for batch in parquet.iter_batches(batch_size=64):
            if batch.nbytes > cap:
                raise limits.refuse_expansion(stored, which)
            for record in batch.to_pylist():
                row += 1
                size = _size(record, limits.max_record_bytes)
                expanded += size  # what the rows decode to: a dictionary value counts once per row using it
                if expanded > cap:
                    raise limits.refuse_expansion(stored, which)
                if size > limits.max_record_bytes:
                    yield _too_large(row, limits)
                else:
                    yield Item(row, record)
    except UploadLimit:
        raise
    except Exception as exc:
        yield Issue(row + 1, "parquet_error", {"msg": str(exc)[:200]})


def _size(value: Any, stop: int) -> int:
    """Roughly the bytes of a decoded value, counting no further than ``stop``."""
    total = 0
    stack = [value]
    while stack and total <= stop:
        current = stack.pop()
        if isinstance(current, str | bytes):
            total += len(current)
        elif isinstance(current, dict):
            stack.extend(current.values())
            total += 2 * len(current)
        elif isinstance(current, list | tuple):
            stack.extend(current)
            total += len(current)
        else:
            total += 8
    return total


TEXT_SPLITS = ("lines", "paragraphs", "document")


def read_text(
    data: bytes | IO[bytes] | Guarded, limits: Limits | None = None, split: str = "document"
) -> Iterator[Item | Issue]:
    """Plain text, one record per non-empty line (``lines``), per block between blank lines
    (``paragraphs``), or a long document in chunks of about TEXT_CHUNK_CHARS cut at blank lines
    (``document``, for continued pre-training); each record with its first line number."""
    limits = limits or Limits()
    chunk: list[str] = []
    size = 0
    start = 1
    for number, raw in bounded_lines(source_of(data), limits.max_record_bytes, blank=True):
        if raw is None:
            yield _too_large(number, limits)
            continue
        line = raw.decode("utf-8", errors="replace")
        if split == "lines":
            if line.strip():
                yield Item(number, line.strip())
            continue
        if not chunk and not line.strip():
            continue
        if not chunk:
            start = number
        chunk.append(line)
        size += len(line) + 1
        full = size >= TEXT_CHUNK_CHARS if split == "document" else True
        if (full and not line.strip()) or size >= limits.max_record_bytes:
            yield Item(start, "\n".join(chunk).strip())
            chunk, size = [], 0
    if chunk and "\n".join(chunk).strip():
        yield Item(start, "\n".join(chunk).strip())


def detect_text_split(path: Path, filename: str) -> str:
    """Markdown and reStructuredText are documents; otherwise blank lines between text mean paragraphs, and a
    file without them holds one record per line."""
    if filename.lower().removesuffix(".gz").endswith((".md", ".markdown", ".rst")):
        return "document"
    with open_upload(path) as handle:
        try:
            head = handle.read(65536)
        except (OSError, EOFError, UploadLimit):
            head = b""
    lines = head.decode("utf-8", errors="replace").splitlines()
    if len(head) == 65536:
        lines = lines[:-1]  # the last line may be cut
    seen_text = False
    for index, line in enumerate(lines):
        if line.strip():
            seen_text = True
        elif seen_text and any(rest.strip() for rest in lines[index + 1 :]):
            return "paragraphs"
    return "lines"


def sniff_file_type(path: Path, filename: str) -> str:
    """The file type from the name, else from the first bytes after decompression."""
    with open_upload(path) as handle:
        try:
            head = handle.read(4096)
        except (OSError, EOFError, UploadLimit):
            head = b""
    return guess_file_type(filename, head)


def read_items(
    path: Path, file_type: str, limits: Limits | None = None, text_split: str | None = None
) -> Iterator[Item | Issue]:
    """Every format streams: memory stays near the record limit whatever the file's size. A file past the
    expansion or structure limits raises UploadLimit (the whole upload is refused with the setting to raise)."""
    limits = limits or Limits()
    if file_type == "parquet":
        yield from read_parquet(path, limits)
        return
    try:
        with open_upload(path, limits) as handle:
            if file_type == "text":
                yield from read_text(handle, limits, text_split or detect_text_split(path, path.name))
            else:
                yield from READERS[file_type](handle, limits)
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        yield Issue(1, "encoding", {"msg": str(exc)[:200]})


READERS = {"jsonl": read_jsonl, "json": read_json_array, "csv": read_csv, "text": read_text}


def read_bytes(data: bytes, file_type: str, limits: Limits | None = None) -> Iterator[Item | Issue]:
    yield from READERS[file_type](data, limits or Limits())
