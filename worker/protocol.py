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

# The worker's pid, given to every child it starts. Under ``accelerate launch`` the ranks' parent is the
# launcher, not the worker, and a launcher outlives a killed worker: the ranks watch the worker itself.
SUPERVISOR_ENV = "REFINERY_SUPERVISOR_PID"


def child_env() -> dict[str, str]:
    """The environment for a child the calling process supervises."""
    return {**os.environ, SUPERVISOR_ENV: str(os.getpid())}


def process_alive(pid: int) -> bool:
    """Whether ``pid`` runs; a zombie (killed, not yet reaped by its own parent) counts as gone."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
    except (OSError, IndexError):  # no /proc: signal 0 asks the kernel without sending anything
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True


def exit_with_parent(interval: float = 0.5) -> None:
    """Die the moment the process that started this child, or the worker that supervises it, is gone. A
    child runs in its own session (the worker stops it as a group), so a worker killed outright would
    otherwise leave it training on while the reconciler hands the job to another worker: two attempts at
    once. A daemon thread watches the parent pid and the supervisor's; when either is gone it kills itself
    as abruptly as its worker died."""
    import signal
    import threading
    import time

    parent = os.getppid()
    supervisor = int(os.environ.get(SUPERVISOR_ENV) or 0)
    if supervisor == parent or supervisor <= 1:
        supervisor = 0

    def watch() -> None:
        while os.getppid() == parent and (not supervisor or process_alive(supervisor)):
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
