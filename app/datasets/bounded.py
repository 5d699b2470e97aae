"""Reading an upload within limits: how far a compressed file may expand, how long one record may be, how
many columns and how deep a Parquet schema may go. A limit passed on the whole file raises UploadLimit (the
upload is refused with the setting that raises it); a line past the record limit is skipped unread."""

from __future__ import annotations

import gzip
import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

CHUNK = 1 << 20


class UploadLimit(ValueError):
    """The whole file is refused by a limit of the install: ``code`` names it (app/runs/messages.py) and
    ``params`` carry the limit and the setting that raises it."""

    def __init__(self, code: str, **params: Any) -> None:
        super().__init__(code)
        self.code = code
        self.params = params


@dataclass(frozen=True)
class Limits:
    """What one upload may expand to. Every reader streams, so memory stays near ``max_record_bytes``."""

    max_decompressed_bytes: int = 8 * 1024**3
    max_ratio: float = 100.0
    ratio_floor_bytes: int = 16 * 1024**2  # below this a file may expand freely (small gzips compress well)
    max_record_bytes: int = 8 * 1024**2
    max_columns: int = 1000
    max_depth: int = 32

    @classmethod
    def from_settings(cls) -> Limits:
        from app.core.config import get_settings

        settings = get_settings()
        return cls(
            max_decompressed_bytes=settings.max_decompressed_bytes,
            max_ratio=settings.max_decompression_ratio,
            max_record_bytes=settings.max_record_bytes,
            max_columns=settings.max_columns,
        )

    def expansion_cap(self, stored_bytes: int) -> tuple[int, str]:
        """The most bytes a file of ``stored_bytes`` may expand to, and the limit that sets it."""
        by_ratio = max(self.ratio_floor_bytes, int(self.max_ratio * stored_bytes))
        if by_ratio < self.max_decompressed_bytes:
            return by_ratio, "ratio"
        return self.max_decompressed_bytes, "size"

    def refuse_expansion(self, stored_bytes: int, which: str) -> UploadLimit:
        if which == "ratio":
            return UploadLimit(
                "decompression_ratio",
                ratio=f"{self.max_ratio:g}",
                size=f"{stored_bytes:,}",
                setting="REFINERY_MAX_DECOMPRESSION_RATIO",
            )
        return UploadLimit(
            "decompressed_too_large",
            limit=f"{self.max_decompressed_bytes:,}",
            setting="REFINERY_MAX_DECOMPRESSED_BYTES",
        )


class Guarded:
    """A decompressed stream that stops (UploadLimit) past the size and expansion-ratio limits: a bomb of a
    few kilobytes is refused after reading a bounded amount, never expanded to gigabytes."""

    def __init__(self, inner: IO[bytes], stored_bytes: int, limits: Limits, *, compressed: bool) -> None:
        self.inner = inner
        self.stored = stored_bytes
        self.limits = limits
        self.cap, self.which = (
            limits.expansion_cap(stored_bytes) if compressed else (limits.max_decompressed_bytes, "size")
        )
        self.total = 0

    def read(self, size: int = CHUNK) -> bytes:
        data = self.inner.read(CHUNK if size is None or size < 0 else size)
        self.total += len(data)
        if self.total > self.cap:
            raise self.limits.refuse_expansion(self.stored, self.which)
        return data

    def close(self) -> None:
        self.inner.close()

    def __enter__(self) -> Guarded:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def source_of(data: bytes | IO[bytes] | Guarded) -> IO[bytes] | Guarded:
    return io.BytesIO(data) if isinstance(data, bytes) else data


def bounded_lines(
    handle: IO[bytes] | Guarded, max_record: int, *, blank: bool = False
) -> Iterator[tuple[int, bytes | None]]:
    """Numbered lines split on b"\\n" only (CR and a first-line BOM removed), read in chunks: a line longer than
    ``max_record`` is skipped without being held and given as None. Blank lines are left out unless ``blank``."""
    number = 0
    pending = bytearray()
    skipping = False
    first = True
    while True:
        chunk = handle.read(CHUNK)
        if not chunk:
            break
        if first:
            chunk = chunk.removeprefix(b"\xef\xbb\xbf")
            first = False
        start = 0
        while True:
            end = chunk.find(b"\n", start)
            if end < 0:
                if not skipping:
                    pending += chunk[start:]
                    if len(pending) > max_record:
                        skipping = True
                        pending.clear()
                break
            number += 1
            if skipping:
                skipping = False
                yield number, None
            else:
                if pending:
                    pending += chunk[start:end]
                    line = bytes(pending)
                    pending.clear()
                else:
                    line = chunk[start:end]
                if len(line) > max_record:
                    yield number, None
                elif blank or line.strip():
                    yield number, line.removesuffix(b"\r")
            start = end + 1
    if skipping:
        yield number + 1, None
    elif pending and (blank or pending.strip()):
        yield number + 1, bytes(pending).removesuffix(b"\r")


def open_upload(path: Path, limits: Limits | None = None) -> Guarded:
    """The upload's bytes, gunzipped when it is gzip, within the expansion limits."""
    limits = limits or Limits()
    with path.open("rb") as probe:
        gzipped = probe.read(2) == b"\x1f\x8b"
    stored = path.stat().st_size
    inner: IO[bytes] = gzip.open(path, "rb") if gzipped else path.open("rb")  # type: ignore[assignment]  # noqa: SIM115
    return Guarded(inner, stored, limits, compressed=gzipped)
