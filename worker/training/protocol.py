"""How a job's child process talks to its supervisor: one JSON object per stdout line."""

from __future__ import annotations

import json
import sys
from typing import Any


def emit(**message: Any) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def progress(fraction: float, message: str) -> None:
    emit(progress=fraction, message=message)


def fail(kind: str, message: str) -> None:
    """A classified failure: the supervisor marks the run failed (no retry) with this sentence."""
    emit(error={"kind": kind, "message": message})
