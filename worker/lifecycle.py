"""Run execution: claim a lease, supervise the job's child process, heartbeat, finish or re-queue.

Heavy work (torch) always happens in a fresh child process started with an argv list: a crash or OOM of
the child cannot take the worker down, and cancelling kills a process group, not a thread.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from sqlalchemy.exc import OperationalError

from app.core.config import get_settings
from app.db.models import Run, RunStatus
from app.db.session import session_scope
from app.deployments.service import settle_stalled
from app.openai_api.stored import purge_expired
from app.runs import service as runs
from worker.forkserver import ChildProcess, ForkServer
from worker.jobs import HANDLERS
from worker.protocol import child_env

log = logging.getLogger(__name__)
STOPPING = threading.Event()
KILL_GRACE_SECONDS = 5.0


def worker_identity() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident()}"


def execute(run_id: str) -> None:
    rid = uuid.UUID(run_id)
    if STOPPING.is_set():
        return  # the run stays queued in the database; the next worker's start-up sweep re-sends it
    with session_scope() as session:
        lease = runs.claim(session, rid, worker_identity())
        run = session.get(Run, rid) if lease else None
        kind, params = (run.kind, dict(run.params)) if run else ("", {})
    if lease is None:
        log.info("run %s is not claimable (duplicate delivery or finished): nothing to do", run_id)
        return
    handler = HANDLERS.get(kind)
    if handler is None:
        with session_scope() as session:
            runs.finish(
                session,
                lease,
                RunStatus.failed,
                error_kind="internal",
                error={"code": "unknown_kind", "params": {"kind": kind}},
            )
        return
    try:
        argv = handler.argv(rid, params, lease.attempt)
    except Exception as exc:
        with session_scope() as session:
            runs.finish(
                session,
                lease,
                RunStatus.failed,
                error_kind="data",
                error={"code": "not_prepared", "params": {"detail": str(exc)}},
            )
        return
    Supervisor(lease, argv, handler).run()


@dataclass
class Supervisor:
    lease: runs.Lease
    argv: list[str]
    handler: Any
    progress: float = 0.0
    note: dict[str, Any] | None = None
    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    started: float = field(default_factory=time.monotonic)
    events: list[dict[str, Any]] = field(default_factory=list)  # from the child, written with the next beat
    pausing: float | None = None  # when the child was asked to stop at a checkpoint for a pause
    log: IO[bytes] | None = None  # the attempt's log: the child's stderr, and its stdout lines that are not ours

    def run(self) -> None:
        settings = get_settings()
        log_path = settings.logs_dir / f"{self.lease.run_id}-attempt{self.lease.attempt}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        if settings.fork_children:
            FORKS.enable()  # the first child of this process starts afresh while the server imports
        with log_path.open("ab") as stderr:
            self.log = stderr
            env = child_env()
            proc: ChildProcess = (
                SPARES.take(self.argv, log_path)
                or FORKS.spawn(self.argv, stderr, env)
                or subprocess.Popen(
                    self.argv,
                    stdout=subprocess.PIPE,
                    stderr=stderr,
                    start_new_session=True,
                    text=True,
                    bufsize=1,
                    env=env,
                )
            )
            lines: queue.Queue[str | None] = queue.Queue()
            assert proc.stdout is not None
            threading.Thread(target=_pump, args=(proc.stdout, lines), daemon=True).start()
            verdict = self._supervise(proc, lines, settings.heartbeat_seconds, settings.lease_ttl_seconds)
            if verdict != "exited":
                _kill_group(proc)
            code = proc.wait()
        SPARES.refill()  # the next job's child gets ready while the worker is between jobs
        self._conclude(verdict, code)

    def _supervise(self, proc: ChildProcess, lines: queue.Queue[str | None], beat: float, ttl: float) -> str:
        last_beat = last_ok = time.monotonic()
        while True:
            try:
                line = lines.get(timeout=0.5)
            except queue.Empty:
                line = ""
            if line is None:
                return "exited"
            if line:
                self._absorb(line)
            now = time.monotonic()
            if STOPPING.is_set():
                return "stopping"
            if now - last_beat >= beat:
                last_beat = now
                try:
                    with session_scope() as session:
                        self._write_events(session)
                        held, asked = runs.heartbeat(
                            session,
                            self.lease,
                            progress=self.progress,
                            note=self.note,
                            eta_seconds=self._eta(),
                        )
                    self.events.clear()
                    last_ok = now
                except Exception as exc:  # database unreachable: keep trying until the lease expires
                    log.warning("heartbeat for %s failed: %s", self.lease.run_id, exc)
                    if now - last_ok > ttl:
                        return "lost"
                    continue
                if not held:
                    return "lost"
                if asked == "cancel":
                    return "cancel"
                if asked == "pause" and self.pausing is None:
                    # the child saves a checkpoint at the end of its step and exits (training) or stops
                    self.pausing = now
                    _signal_group(proc, signal.SIGTERM)
            if self.pausing is not None and now - self.pausing > get_settings().pause_grace_seconds:
                return "pause"

    def _absorb(self, line: str) -> None:
        try:
            msg = json.loads(line)
        except ValueError:
            msg = None
        if not isinstance(msg, dict):  # the trainer's own printing (its logged metrics): kept in the log
            if self.log is not None:
                with contextlib.suppress(OSError):
                    self.log.write((line + "\n").encode("utf-8", "replace"))
                    self.log.flush()
            return
        if "progress" in msg:
            self.progress = float(msg["progress"])
            if isinstance(msg.get("code"), str):
                self.note = {"code": msg["code"], "params": msg.get("params") or {}}
            elif msg.get("message"):
                self.note = {"code": "plain", "params": {"detail": str(msg["message"])}}
        if isinstance(msg.get("event"), dict) and isinstance(msg["event"].get("code"), str):
            self.events.append({"code": msg["event"]["code"], "params": msg["event"].get("params") or {}})
        if isinstance(msg.get("result"), dict):
            self.result = msg["result"]
        if isinstance(msg.get("error"), dict):
            error = msg["error"]
            self.error = {
                "kind": str(error.get("kind", "internal")),
                "code": str(error.get("code", "plain")),
                "params": error.get("params") or {"detail": str(error.get("message", ""))},
            }

    def _eta(self) -> float | None:
        if self.progress < 0.02:
            return None
        elapsed = time.monotonic() - self.started
        return elapsed * (1 - self.progress) / self.progress

    def _write_events(self, session: Any) -> None:
        """Add the child's events to the session; the caller clears them once the session committed."""
        for event in self.events[:100]:  # a child cannot flood the log
            runs.add_event(session, self.lease.run_id, event["code"], event["params"], attempt=self.lease.attempt)

    def _conclude(self, verdict: str, code: int) -> None:
        """Record how the attempt ended. With the database down this is retried until the lease would
        expire; after that the worker gives up (fenced: the reconciler re-queues the run, and a late write
        of this attempt would be refused by the lease anyway)."""
        deadline = time.monotonic() + get_settings().lease_ttl_seconds
        while True:
            try:
                self._record_conclusion(verdict, code)
                self.events.clear()
                return
            except OperationalError as exc:
                if time.monotonic() > deadline:
                    log.error("could not record the end of %s (database unreachable): %s", self.lease.run_id, exc)
                    return
                log.warning("recording the end of %s failed, retrying: %s", self.lease.run_id, exc)
                time.sleep(0.5)

    def _record_conclusion(self, verdict: str, code: int) -> None:
        with session_scope() as session:
            self._write_events(session)
            if verdict == "lost":
                log.warning("lost the lease of %s; stopped the child", self.lease.run_id)
            elif verdict == "cancel":
                runs.finish(session, self.lease, RunStatus.cancelled)
            elif self.pausing is not None and self.error is None and not (code == 0 and self.result is not None):
                runs.pause(session, self.lease)
            elif verdict == "stopping":
                runs.release_for_retry(
                    session, self.lease, {"code": "worker_stopped", "params": {}}, count_attempt=False
                )
            elif self.error is not None:
                runs.finish(
                    session,
                    self.lease,
                    RunStatus.failed,
                    error_kind=self.error["kind"],
                    error={"code": self.error["code"], "params": self.error["params"]},
                )
            elif code == 0 and self.result is not None:
                self.handler.on_success(session, self.lease.run_id, self.result)
                runs.finish(session, self.lease, RunStatus.succeeded, result=self.result)
            else:
                reason = (
                    {"code": "killed", "params": {"signal": -code}}
                    if code < 0
                    else {"code": "exited", "params": {"code": code}}
                )
                runs.release_for_retry(session, self.lease, reason)


TRAIN_ARGV = [sys.executable, "-m", "worker.training.train"]


class SpareTrainingChild:
    """One training child kept ready with its imports done (worker/training/spare.py), so that a job on a
    warm worker does not wait seconds for torch to import. Used only for a single-process training argv, and
    only while the environment is the one the spare was started with; off unless the Celery worker turns it
    on (REFINERY_SPARE_TRAINING_CHILD)."""

    def __init__(self) -> None:
        self.enabled = False
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[str] | None = None
        self._env: dict[str, str] = {}

    def enable(self) -> None:
        self.enabled = True
        self.refill()

    def refill(self) -> None:
        with self._lock:
            if not self.enabled or STOPPING.is_set() or (self._proc is not None and self._proc.poll() is None):
                return
            self._env = dict(os.environ)
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "worker.training.spare"],
                env=child_env(),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
                text=True,
                bufsize=1,
            )

    def take(self, argv: list[str], log_path: Path) -> subprocess.Popen[str] | None:
        """The spare, given this job, when the argv is a plain training child's; else None."""
        if argv[:3] != TRAIN_ARGV or len(argv) != 4:
            return None
        with self._lock:
            proc, self._proc = self._proc, None
        if proc is None:
            return None
        if proc.poll() is not None or dict(os.environ) != self._env:
            _kill_group(proc)
            return None
        try:
            assert proc.stdin is not None
            proc.stdin.write(json.dumps({"job": argv[3], "log": str(log_path)}) + "\n")
            proc.stdin.close()
        except OSError:
            _kill_group(proc)
            return None
        return proc

    def close(self) -> None:
        with self._lock:
            self.enabled = False
            proc, self._proc = self._proc, None
        if proc is not None:
            _kill_group(proc)


SPARES = SpareTrainingChild()
FORKS = ForkServer()


def _pump(stream: IO[str], lines: queue.Queue[str | None]) -> None:
    for line in stream:
        lines.put(line.strip())
    lines.put(None)


def _signal_group(proc: ChildProcess, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)


def _kill_group(proc: ChildProcess) -> None:
    for sig, wait in ((signal.SIGTERM, KILL_GRACE_SECONDS), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def reconcile_forever(interval: float) -> None:
    first = True
    while first or not STOPPING.wait(interval):
        first_sweep, first = first, False
        try:
            with session_scope() as session:
                counts = runs.reconcile(session, resend_all=first_sweep)
                counts["stored_completions_expired"] = purge_expired(session)
                counts["promotions_settled"] = settle_stalled(session)
            if any(counts.values()):
                log.info("reconciler: %s", counts)
        except Exception as exc:
            log.warning("reconciler sweep failed: %s", exc)


def start_reconciler() -> threading.Thread:
    thread = threading.Thread(
        target=reconcile_forever, args=(get_settings().reconcile_seconds,), name="reconciler", daemon=True
    )
    thread.start()
    return thread
