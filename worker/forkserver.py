"""Children that start without importing torch: a fork server imports the heavy libraries once (torch,
transformers, PEFT, TRL, datasets: seconds of CPU each time a child starts them afresh), then forks one child
per request, which runs its ``python -m MODULE ARGS`` exactly as a fresh interpreter would, in its own session,
with the worker's pipe as stdout, the attempt's log as stderr and the worker's environment.

The worker talks to it over a Unix socket (``ForkServer`` below): one connection per child, carrying the request
and the two file descriptors (SCM_RIGHTS), then the child's pid and, when the server has reaped it, its exit
status. Only the modules in ``FORKABLE`` are forked, and only while the variables the libraries read at import
(``IMPORT_TIME_PREFIXES``) are those the server imported under; anything else, or a server not ready yet,
starts with ``subprocess.Popen`` as before. The server forks from its only thread and has never run a tensor
operation, so no thread pool is copied into a child. It exits when the process that started it goes away, or,
when the worker closes its stdin, as soon as its last child has finished (children watch it: see
worker.protocol.exit_with_parent)."""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import IO, Protocol

PRELOAD = ("torch", "transformers", "transformers.trainer", "peft", "trl", "datasets", "accelerate", "safetensors")
PRELOAD_NAMES = {"trl": ("SFTTrainer", "SFTConfig", "DPOTrainer", "DPOConfig")}  # lazy modules: touch them
# the children that import torch and transformers anyway (worker/jobs): ``python -m MODULE SPEC``. Validation
# (worker.ingest) caps its own data segment, which a fork would fill with the server's libraries, and cleaning
# reports its peak memory, which they would inflate: those two start afresh.
FORKABLE = frozenset(
    {
        "worker.training.train",
        "worker.training.model_import",
        "worker.evaluation.evaluate",
        "worker.evaluation.distill",
        "worker.evaluation.eval_run",
        "worker.evaluation.judge",
        "worker.export.gguf_export",
        "worker.export.merge",
        "worker.export.adapter_check",
    }
)
# the variables the preloaded libraries read when imported (devices, threads, caches, offline switches, the
# interpreter's own): a child whose values differ starts afresh; the others (REFINERY_*, pytest's) it may change
IMPORT_TIME_PREFIXES = (
    "HF_",
    "HUGGINGFACE_",
    "TRANSFORMERS_",
    "TOKENIZERS_",
    "TORCH",
    "PYTORCH_",
    "CUDA",
    "NCCL_",
    "NVIDIA_",
    "OMP_",
    "MKL_",
    "OPENBLAS_",
    "KMP_",
    "BNB_",
    "ACCELERATE_",
    "TRL_",
    "PEFT_",
    "DATASETS_",
    "PYTHON",
    "LD_",
    "XDG_",
    "HOME",
    "PATH",
    "TMPDIR",
    "LANG",
    "LC_",
    "WORLD_SIZE",
    "RANK",
    "LOCAL_RANK",
    "MASTER_",
)


def fingerprint(env: dict[str, str]) -> dict[str, str]:
    """The part of an environment the imported libraries may have read."""
    return {k: v for k, v in env.items() if k.startswith(IMPORT_TIME_PREFIXES)}


# --- the server ---------------------------------------------------------------------------------------------


def _child(module: str, args: list[str], env: dict[str, str], fds: list[int], inherited: list[socket.socket]) -> None:
    """In the forked child: become the process a fresh ``python -m module args`` would be, run, exit."""
    code = 1
    try:
        for sock in inherited:  # the server's listener and its connections to the other children
            sock.close()
        os.setsid()
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD, signal.SIGPIPE):
            signal.signal(sig, signal.SIG_DFL if sig != signal.SIGINT else signal.default_int_handler)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(fds[0], 1)
        os.dup2(fds[1], 2)
        for fd in (null, *fds):
            os.close(fd)
        os.environ.clear()
        os.environ.update(env)
        import runpy

        sys.argv = [module, *args]
        try:
            runpy.run_module(module, run_name="__main__", alter_sys=True)
            code = 0
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
            if not isinstance(exit_.code, int | None):
                print(exit_.code, file=sys.stderr)
    except BaseException:
        import traceback

        traceback.print_exc()
        code = 1
    finally:
        with contextlib.suppress(BaseException):
            import atexit

            atexit._run_exitfuncs()
        with contextlib.suppress(BaseException):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


def serve(path: str) -> int:
    import importlib

    for name in PRELOAD:
        with contextlib.suppress(Exception):
            module = importlib.import_module(name)
            for attribute in PRELOAD_NAMES.get(name, ()):
                getattr(module, attribute)
    parent = os.getppid()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    listener.bind(path + ".tmp")
    os.rename(path + ".tmp", path)  # ready: the socket appears only once the imports are done
    listener.listen(16)
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ, "accept")
    selector.register(sys.stdin, selectors.EVENT_READ, "stdin")
    children: dict[int, socket.socket] = {}
    retiring = False
    while True:
        for key, _mask in selector.select(timeout=0.2):
            if key.data == "stdin":
                if not os.read(sys.stdin.fileno(), 4096):  # the worker closed it: finish the children, then go
                    retiring = True
                    selector.unregister(sys.stdin)
                    selector.unregister(listener)
                    listener.close()
                continue
            conn, _ = listener.accept()
            try:
                conn.settimeout(10)
                message, fds, _flags, _addr = socket.recv_fds(conn, 1 << 20, 2)
                request = json.loads(message)
                if len(fds) != 2 or request.get("module") not in FORKABLE:
                    raise ValueError("bad request")
            except (OSError, ValueError):
                conn.close()
                continue
            sys.stdout.flush()
            sys.stderr.flush()
            pid = os.fork()
            if pid == 0:
                _child(
                    request["module"],
                    list(request["args"]),
                    dict(request["env"]),
                    fds,
                    [listener, conn, *children.values()],
                )
            for fd in fds:
                os.close(fd)
            with contextlib.suppress(OSError):
                conn.sendall(f"pid {pid}\n".encode())
            children[pid] = conn
        while children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            ended = children.pop(pid, None)
            if ended is not None:
                with contextlib.suppress(OSError):
                    ended.sendall(f"exit {os.waitstatus_to_exitcode(status)}\n".encode())
                ended.close()
        if os.getppid() != parent or (retiring and not children):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            return 0


# --- the worker's side --------------------------------------------------------------------------------------


class ChildProcess(Protocol):
    """What the worker needs of a child it supervises: a ``subprocess.Popen``, or a ``ForkedChild``."""

    pid: int

    @property
    def stdout(self) -> IO[str] | None: ...

    def poll(self) -> int | None: ...

    def wait(self, timeout: float | None = None) -> int: ...


def gpu_visible() -> bool:
    """Whether this process can see an NVIDIA GPU (then children are not forked)."""
    return Path("/dev/nvidiactl").exists() and os.environ.get("CUDA_VISIBLE_DEVICES") not in ("", "-1")


class ForkedChild:
    """What the worker supervises for a forked child: the parts of ``subprocess.Popen`` it uses."""

    def __init__(self, conn: socket.socket, pid: int, stdout: IO[str], args: list[str], unread: bytes) -> None:
        self._conn = conn
        self._buffer = unread  # what arrived after the pid line (the exit line, for a child that ended at once)
        self.pid = pid
        self.stdout: IO[str] | None = stdout
        self.args = args
        self.returncode: int | None = None

    def _read(self, timeout: float | None) -> None:
        if self.returncode is not None:
            return
        self._conn.settimeout(timeout)
        try:
            while b"\n" not in self._buffer:
                chunk = self._conn.recv(64)
                if not chunk:  # the server went away: its children go with it (exit_with_parent)
                    self.returncode = -signal.SIGKILL
                    break
                self._buffer += chunk
        except (TimeoutError, BlockingIOError):
            return
        except OSError:
            self.returncode = -signal.SIGKILL
        if self.returncode is None and self._buffer.startswith(b"exit "):
            self.returncode = int(self._buffer.split(b"\n", 1)[0][5:])
        if self.returncode is not None:
            self._conn.close()

    def poll(self) -> int | None:
        self._read(0)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        self._read(timeout)
        if self.returncode is None:
            raise subprocess.TimeoutExpired(self.args, timeout or 0)
        return self.returncode


class ForkServer:
    """The worker's fork server: started when enabled, used once its socket is there, restarted (the old one
    retiring after its children) when the environment it imported under has changed."""

    def __init__(self) -> None:
        self.enabled = False
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._path = ""
        self._env: dict[str, str] = {}

    def enable(self) -> None:
        if gpu_visible():
            return  # a library may touch CUDA when imported, and CUDA does not survive a fork: start afresh
        with self._lock:
            if self.enabled:
                return
            self.enabled = True
        self._ensure(fingerprint(dict(os.environ)))

    def _ensure(self, env: dict[str, str]) -> None:
        with self._lock:
            if not self.enabled:
                return
            if self._proc is not None and self._proc.poll() is None and env == self._env:
                return
            self._retire()
            # a short path (a Unix socket's is at most 107 bytes), private to this user
            directory = Path(tempfile.gettempdir()) / f"refinery-{os.getuid()}"
            directory.mkdir(mode=0o700, exist_ok=True)
            self._path = str(directory / f"fork-{os.getpid()}-{time.monotonic_ns() % 10**9}.sock")
            self._env = env
            from worker.protocol import child_env

            self._proc = subprocess.Popen(
                [sys.executable, "-m", "worker.forkserver", self._path],
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
                env=child_env(),
            )

    def _retire(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.stdin is not None:
            with contextlib.suppress(OSError):
                proc.stdin.close()  # it finishes its children, then exits

    def spawn(self, argv: list[str], stderr: IO[bytes], env: dict[str, str]) -> ForkedChild | None:
        """The child forked from the server, or None when it cannot be (then the caller starts it afresh)."""
        if not self.enabled or len(argv) < 3 or argv[:2] != [sys.executable, "-m"] or argv[2] not in FORKABLE:
            return None
        wanted = fingerprint(env)
        self._ensure(wanted)
        with self._lock:
            path, ready = self._path, self._proc is not None and self._proc.poll() is None
        if not ready or not os.path.exists(path):
            return None  # still importing (or gone): this child starts the usual way
        read_end, write_end = os.pipe()
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            conn.settimeout(10)
            conn.connect(path)
            request = {"module": argv[2], "args": argv[3:], "env": env}
            socket.send_fds(conn, [json.dumps(request).encode()], [write_end, stderr.fileno()])
            os.close(write_end)
            write_end = -1
            reply = b""
            while b"\n" not in reply:
                chunk = conn.recv(64)
                if not chunk:
                    raise OSError("the fork server closed the connection")
                reply += chunk
            line, _, unread = reply.partition(b"\n")
            pid = int(line.decode().split()[1])
        except (OSError, ValueError, IndexError):
            conn.close()
            os.close(read_end)
            if write_end >= 0:
                os.close(write_end)
            return None
        stdout = os.fdopen(read_end, "r", buffering=1, encoding="utf-8", errors="replace")
        return ForkedChild(conn, pid, stdout, argv, unread)

    def close(self) -> None:
        with self._lock:
            self.enabled = False
            proc, self._proc = self._proc, None
        if proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(Exception):
                proc.wait(timeout=5)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._path)  # killed, it could not remove its socket itself


def main() -> int:
    return serve(sys.argv[1])  # it watches its parent itself, between requests: no second thread to fork with


if __name__ == "__main__":
    sys.exit(main())
