"""Running a python grader: one sandbox child per call (sandbox_child.py), started with a clean environment in
an empty temporary directory, in a network namespace of its own when the kernel lets an unprivileged user make
one (``unshare -rn``; otherwise the child's audit hook alone refuses sockets), in its own process group, which
the parent kills at the wall-clock limit. What comes back is bounded; any failure is a result with its reason,
never an exception in the caller (a web request or a worker)."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CHILD = Path(__file__).with_name("sandbox_child.py")
OUTPUT_LIMIT = 256 * 1024
# at most this many sandboxes at once in one process; others wait up to QUEUE_SECONDS
CONCURRENT = threading.BoundedSemaphore(2)
QUEUE_SECONDS = 30


@dataclass(frozen=True)
class Limits:
    cpu_seconds: int = 5
    wall_seconds: float = 15
    memory_bytes: int = 768 * 1024 * 1024
    file_bytes: int = 16 * 1024 * 1024


@dataclass(frozen=True)
class SandboxResult:
    score: float | None  # None when the grader failed
    error: str | None  # why, per sample: the grader's own exception or the limit it hit
    printed: str  # what the grader printed (bounded)
    seconds: float
    isolated_network: bool  # the child ran in a network namespace of its own


@functools.cache
def network_namespaces() -> bool:
    """Whether ``unshare -rn`` works here (unprivileged user and network namespaces)."""
    unshare = shutil.which("unshare")
    if unshare is None:
        return False
    try:
        done = subprocess.run([unshare, "-rn", "--", "true"], capture_output=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return False
    return done.returncode == 0


def _read_bounded(stream: Any, into: list[bytes]) -> None:
    size = 0
    while chunk := stream.read(65536):
        if size < OUTPUT_LIMIT:
            into.append(chunk[: OUTPUT_LIMIT - size])
        size += len(chunk)  # keep draining so the child never blocks on a full pipe


def run_python(
    source: str, *, sample: dict[str, Any], item: dict[str, Any], limits: Limits | None = None
) -> SandboxResult:
    limits = limits or Limits()
    started = time.monotonic()
    isolated = network_namespaces()
    if not CONCURRENT.acquire(timeout=QUEUE_SECONDS):
        return SandboxResult(None, "Too many python graders are running; try again shortly.", "", 0.0, isolated)
    workdir = tempfile.mkdtemp(prefix="refinery-grader-")
    try:
        command = [sys.executable, "-I", str(CHILD)]
        if isolated:
            command = [shutil.which("unshare") or "unshare", "-rn", "--", *command]
        env = {"PATH": "/usr/bin:/bin", "HOME": workdir, "TMPDIR": workdir, "LANG": "C.UTF-8"}
        request = {
            "source": source,
            "sample": sample,
            "item": item,
            "cpu_seconds": limits.cpu_seconds,
            "memory_bytes": limits.memory_bytes,
            "file_bytes": limits.file_bytes,
        }
        proc = subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            cwd=workdir,
            env=env,
            start_new_session=True,
        )
        out: list[bytes] = []
        reader = threading.Thread(target=_read_bounded, args=(proc.stdout, out), daemon=True)
        reader.start()
        try:
            assert proc.stdin is not None
            proc.stdin.write(json.dumps(request).encode())
            proc.stdin.close()
        except BrokenPipeError:
            pass
        timed_out = False
        try:
            proc.wait(timeout=limits.wall_seconds)
        except subprocess.TimeoutExpired:
            timed_out = True
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)  # the child and anything it left behind
            proc.wait()
            reader.join(timeout=5)
        seconds = round(time.monotonic() - started, 3)
        if timed_out:
            return SandboxResult(
                None, f"the grader ran past its {limits.wall_seconds:g} s limit", "", seconds, isolated
            )
        return _parse(b"".join(out), proc.returncode, limits, seconds, isolated)
    finally:
        CONCURRENT.release()
        shutil.rmtree(workdir, ignore_errors=True)


def _parse(raw: bytes, returncode: int, limits: Limits, seconds: float, isolated: bool) -> SandboxResult:
    if returncode in (-signal.SIGXCPU, -signal.SIGKILL) and not raw:
        reason = f"the grader used more than its {limits.cpu_seconds} s of CPU"
        return SandboxResult(None, reason, "", seconds, isolated)
    if returncode == -signal.SIGXFSZ:
        reason = f"the grader wrote a file past its {limits.file_bytes // (1024 * 1024)} MB limit"
        return SandboxResult(None, reason, "", seconds, isolated)
    line = raw.decode("utf-8", "replace").strip().splitlines()[-1:] if raw else []
    try:
        result = json.loads(line[0]) if line else None
    except ValueError:
        result = None
    if not isinstance(result, dict):
        if len(raw) >= OUTPUT_LIMIT:
            reason = f"the grader wrote more than {OUTPUT_LIMIT // 1024} KB to its output"
        else:
            reason = f"the grader's process ended without a result (exit status {returncode})"
        return SandboxResult(None, reason, "", seconds, isolated)
    printed = str(result.get("printed", ""))
    if "error" in result:
        return SandboxResult(None, str(result["error"]), printed, seconds, isolated)
    return SandboxResult(float(result["score"]), None, printed, seconds, isolated)
