"""How a job's child process talks to its supervisor: one JSON object per stdout line.

Texts are codes with parameters (app/runs/messages.py) so that the interface can show them in the reader's
language; the English rendering travels along for logs.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from typing import Any

from app.runs.messages import english


def exit_with_parent(interval: float = 0.5) -> None:
    """Die the moment the process that started this child is gone. A child runs in its own session (the
    worker stops it as a group), so a worker killed outright would otherwise leave it training on while the
    reconciler hands the job to another worker: two attempts at once. A daemon thread watches the parent
    pid; when the child is re-parented it kills itself as abruptly as its worker died."""
    import signal
    import threading
    import time

    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(interval)
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def is_main_process() -> bool:
    """Under ``accelerate launch`` only rank 0 speaks for the job; the other ranks train silently."""
    return os.environ.get("RANK", "0") in ("", "0")


def emit(**message: Any) -> None:
    if not is_main_process():
        return
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def progress(fraction: float, code: str, **params: Any) -> None:
    emit(progress=fraction, code=code, params=params, message=english(code, params))


def event(code: str, **params: Any) -> None:
    """A line for the job's event log (like OpenAI's job events): training started, checkpoint saved…"""
    emit(event={"code": code, "params": params, "message": english(code, params)})


def fail(kind: str, code: str, **params: Any) -> None:
    """A classified failure: the supervisor marks the run failed (no retry) with this sentence."""
    emit(error={"kind": kind, "code": code, "params": params, "message": english(code, params)})


def run_child(work: Callable[[dict[str, Any]], dict[str, Any]], job: dict[str, Any], *, error_code: str) -> int:
    """A child's main: its result on success; bad data, out-of-memory or another error as a classified
    failure (``error_code`` names the last, with the error's text as ``detail``)."""
    import torch

    from worker.training.data import DataError

    exit_with_parent()
    try:
        result = work(job)
    except DataError as exc:
        fail("data", exc.code, **exc.params)
        return 1
    except torch.OutOfMemoryError:
        fail("oom", "oom")
        return 1
    except (OSError, RuntimeError, ValueError) as exc:
        fail("internal", error_code, detail=str(exc)[:500])
        return 1
    emit(result=result)
    return 0
