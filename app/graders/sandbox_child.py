"""The sandbox child of a python grader: run as a script (``python -I sandbox_child.py``), standard library
only, so it imports nothing of Refinery and reads no settings. Its parent (sandbox.py) gives it an empty
directory as its working directory, a clean environment, and (where the kernel allows) a network namespace of
its own with no interfaces; it reads one JSON request on stdin and writes one JSON line on stdout.

Before the user's code runs, this process
* lowers its own hard limits: CPU seconds, address space, the size of a file it writes, open files;
* installs an audit hook (which nothing can remove) that refuses sockets, new processes (fork, exec, spawn,
  subprocess, os.system), signals to other processes, native code (ctypes), and any file outside the
  standard library and its own directory, where alone it may write;
* keeps what the code prints in a bounded buffer (the one line on stdout is the result).
"""

from __future__ import annotations

import errno
import io
import json
import os
import resource
import sys

REQUEST_LIMIT = 16 * 1024 * 1024
PRINT_LIMIT = 64 * 1024
REFUSED_EVENTS = {
    "os.fork": "starting processes",
    "os.forkpty": "starting processes",
    "os.exec": "starting programs",
    "os.posix_spawn": "starting programs",
    "os.spawn": "starting programs",
    "os.system": "starting programs",
    "subprocess.Popen": "starting programs",
    "pty.spawn": "starting programs",
    "os.kill": "signals",
    "os.killpg": "signals",
    "signal.pthread_kill": "signals",
    "ctypes.dlopen": "native code",
    "ctypes.dlsym": "native code",
    "ctypes.cdata": "native code",
    "ctypes.call_function": "native code",
    "sys.addaudithook": "changing the sandbox",
    "sys.settrace": "changing the sandbox",
    "sys.setprofile": "changing the sandbox",
    "setopencodehook": "changing the sandbox",
    "os.chdir": "leaving the grader's directory",
    "os.chroot": "leaving the grader's directory",
    "mmap.__new__": "memory maps",
    "_thread.start_new_thread": "threads",
    "socket.__new__": "network access",
    "socket.bind": "network access",
    "socket.connect": "network access",
    "socket.getaddrinfo": "network access",
    "socket.gethostbyname": "network access",
    "socket.sendto": "network access",
    "socket.sendmsg": "network access",
}
REFUSED_MODULES = {"ctypes", "_ctypes", "_posixsubprocess", "mmap"}
# events carrying a path (its argument 0): reading is allowed inside READABLE, writing only in the workdir
PATH_EVENTS = {
    "os.listdir",
    "os.scandir",
    "os.remove",
    "os.rename",
    "os.rmdir",
    "os.mkdir",
    "os.chmod",
    "os.chown",
    "os.link",
    "os.symlink",
    "os.truncate",
    "os.utime",
    "shutil.copyfile",
    "shutil.rmtree",
    "glob.glob",
}
WRITING_EVENTS = PATH_EVENTS - {"os.listdir", "os.scandir", "glob.glob"}


class SandboxRefusal(PermissionError):
    pass


def _real(path: object) -> str | None:
    if isinstance(path, int):
        return None  # an already open descriptor: it was checked when opened
    if isinstance(path, (str, bytes, os.PathLike)):
        return os.path.realpath(os.fsdecode(path))
    return str(path)


def install(workdir: str) -> None:
    prefixes = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix, os.path.dirname(os.__file__)}
    readable = (*(os.path.realpath(p) + os.sep for p in prefixes), "/dev/null", "/dev/urandom", workdir + os.sep)
    writable = workdir + os.sep

    def inside(path: str, roots: tuple[str, ...] | str) -> bool:
        roots = (roots,) if isinstance(roots, str) else roots
        return any(path == root.rstrip(os.sep) or path.startswith(root) for root in roots)

    def hook(event: str, args: tuple[object, ...]) -> None:
        if event in REFUSED_EVENTS:
            raise SandboxRefusal(f"the grader sandbox refuses {REFUSED_EVENTS[event]} ({event})")
        if event == "import" and args and str(args[0]).split(".")[0] in REFUSED_MODULES:
            raise SandboxRefusal(f"the grader sandbox refuses the module '{args[0]}'")
        if event == "open" and args:
            path = _real(args[0])
            if path is None:
                return
            mode = str(args[1]) if len(args) > 1 and args[1] is not None else "r"
            flags = args[2] if len(args) > 2 and isinstance(args[2], int) else 0
            writes = any(c in mode for c in "wax+") or bool(flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT))
            if writes and not inside(path, writable):
                raise SandboxRefusal(f"the grader sandbox refuses writing {path}: write in the current directory")
            if not inside(path, readable):
                raise SandboxRefusal(f"the grader sandbox refuses reading {path}")
        elif event in PATH_EVENTS and args:
            path = _real(args[0])
            if path is None:
                return
            if event in WRITING_EVENTS and not inside(path, writable):
                raise SandboxRefusal(f"the grader sandbox refuses changing {path}")
            if not inside(path, readable):
                raise SandboxRefusal(f"the grader sandbox refuses reading {path}")

    sys.addaudithook(hook)


def limit(cpu_seconds: int, memory_bytes: int, file_bytes: int) -> None:
    resource.setrlimit(resource.RLIMIT_CPU, (cpu_seconds, cpu_seconds))
    resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    resource.setrlimit(resource.RLIMIT_FSIZE, (file_bytes, file_bytes))
    resource.setrlimit(resource.RLIMIT_NOFILE, (32, 32))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


class _Bounded(io.StringIO):
    def write(self, text: str) -> int:
        room = PRINT_LIMIT - self.tell()
        if room > 0:
            super().write(text[:room])
        return len(text)


def main() -> None:
    out = sys.stdout
    request = json.loads(sys.stdin.read(REQUEST_LIMIT))
    workdir = os.path.realpath(os.getcwd())
    limit(int(request["cpu_seconds"]), int(request["memory_bytes"]), int(request["file_bytes"]))
    printed = _Bounded()
    namespace: dict[str, object] = {"__name__": "grader"}
    install(workdir)
    sys.stdout = sys.stderr = printed
    result: dict[str, object]
    try:
        code = compile(request["source"], "<grader>", "exec")
        exec(code, namespace)  # noqa: S102 - the user's grader, inside the sandbox this module sets up
        grade = namespace.get("grade")
        if not callable(grade):
            raise NameError("the source defines no function grade(sample, item)")
        score = grade(request["sample"], request["item"])
        if isinstance(score, bool) or not isinstance(score, (int, float)):
            raise TypeError(f"grade() returned {type(score).__name__}; it must return a number")
        result = {"score": float(score)}
    except MemoryError:
        result = {"error": "MemoryError: the grader went past its memory limit"}
    except OSError as exc:
        if exc.errno == errno.EFBIG:  # Python ignores SIGXFSZ: the write past RLIMIT_FSIZE fails instead
            megabytes = int(request["file_bytes"]) // (1024 * 1024)
            result = {"error": f"OSError: the grader wrote a file past its {megabytes} MB limit"}
        else:
            result = {"error": f"{type(exc).__name__}: {exc}"[:2000]}
    except BaseException as exc:  # the user's error, reported per sample
        result = {"error": f"{type(exc).__name__}: {exc}"[:2000]}
    result["printed"] = printed.getvalue()[:4000]
    out.write(json.dumps(result) + "\n")
    out.flush()
    os._exit(0)  # no interpreter shutdown: nothing the grader left behind runs


if __name__ == "__main__":
    main()
