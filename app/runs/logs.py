"""A run's log, as the worker keeps it: one file per attempt (the child's stderr, and the lines it printed
that are not the worker protocol — the trainer's logged metrics), shown live on the job page and downloaded
whole. Read from the end: a long job's log is never loaded whole into the web process."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from pathlib import Path

from app.core.config import get_settings

TAIL_BYTES = 64 * 1024  # read from the end of the newest attempts for the live view
CHUNK = 64 * 1024


def attempt_logs(run_id: uuid.UUID) -> list[tuple[int, Path]]:
    """(attempt, file) of every attempt of the run that has written a log, oldest first."""
    found = []
    for path in get_settings().logs_dir.glob(f"{run_id}-attempt*.log"):
        match = re.fullmatch(rf"{run_id}-attempt(\d+)\.log", path.name)
        if match:
            found.append((int(match.group(1)), path))
    return sorted(found)


def _header(attempt: int) -> str:
    return f"===== attempt {attempt} =====\n"


def tail(run_id: uuid.UUID, lines: int = 200) -> str:
    """The last ``lines`` lines over the attempts (each headed by its number), newest attempts read first."""
    parts: list[str] = []
    budget = TAIL_BYTES
    for attempt, path in reversed(attempt_logs(run_id)):
        if budget <= 0:
            break
        size = path.stat().st_size
        with path.open("rb") as handle:
            handle.seek(max(0, size - budget))
            text = handle.read(budget).decode("utf-8", "replace")
        budget -= size
        if size > len(text.encode("utf-8", "replace")):  # started mid-file: drop the cut first line
            text = text.split("\n", 1)[-1]
        parts.insert(0, _header(attempt) + text)
    shown = "".join(parts).splitlines()[-lines:]
    return "\n".join(shown)


def stream(run_id: uuid.UUID) -> Iterator[bytes]:
    """The whole log, attempt by attempt, in chunks."""
    for attempt, path in attempt_logs(run_id):
        yield _header(attempt).encode()
        with path.open("rb") as handle:
            while chunk := handle.read(CHUNK):
                yield chunk
