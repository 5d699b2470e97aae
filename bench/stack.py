"""The processes the benchmarks measure: `refinery web`, `refinery worker` (and `refinery inference`) on a
fresh data directory with an admin and an API key, on the embedded default or on PostgreSQL and Redis."""

from __future__ import annotations

import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
PASSWORD = "load-admin-password-1"  # noqa: S105 (the throwaway admin of a benchmark data directory)


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait(predicate: Any, timeout: float, what: str, interval: float = 0.3) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}")


def percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {"n": 0, "p50_ms": 0.0, "p95_ms": 0.0, "max_ms": 0.0}
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return {
        "n": len(ordered),
        "p50_ms": round(statistics.median(ordered) * 1000, 1),
        "p95_ms": round(p95 * 1000, 1),
        "max_ms": round(ordered[-1] * 1000, 1),
    }


@dataclass
class Stack:
    """`refinery web` and `refinery worker` on a fresh data directory, an admin logged in, an API key."""

    data: Path
    base: str = ""
    key: str = ""
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    web_pid: int = 0
    env: dict[str, str] = field(default_factory=dict)

    def logs(self) -> str:
        return "".join(p.read_text(errors="replace") for p in sorted(self.data.glob("*.log")))

    def session(self) -> httpx.Client:
        """A browser's session: logged in with the cookie, the CSRF token in the htmx header."""
        import re

        client = httpx.Client(base_url=self.base, timeout=60)
        page = client.get("/login").text
        token = re.search(r'name="csrf_token" value="([^"]+)"', page)
        assert token, "no CSRF token on /login"
        answer = client.post(
            "/login", data={"email": "admin@example.com", "password": PASSWORD, "csrf_token": token[1]}
        )
        assert answer.status_code in (200, 303), answer.text[:300]
        fresh = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/settings/keys").text)
        assert fresh
        client.headers["X-CSRF-Token"] = fresh[1]
        return client

    def api(self) -> httpx.Client:
        return httpx.Client(base_url=self.base, timeout=300, headers={"Authorization": f"Bearer {self.key}"})


@contextmanager
def postgres_database(admin_url: str) -> Iterator[str]:
    """A fresh database on the PostgreSQL server at ``admin_url``, dropped afterwards; its SQLAlchemy URL."""
    import psycopg

    name = f"refinery_load_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{admin_url.rsplit('/', 1)[0].replace('postgresql://', 'postgresql+psycopg://', 1)}/{name}"
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def stack(
    data: Path, *, inference: bool = False, database_url: str | None = None, broker_url: str | None = None
) -> Iterator[Stack]:
    """Web, worker (and inference) processes on a fresh data dir: the embedded default, or the production
    shape when given a PostgreSQL database and a Redis broker."""
    shutil.rmtree(data, ignore_errors=True)
    data.mkdir(parents=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("REFINERY_")}
    if database_url:
        env["REFINERY_DATABASE_URL"] = database_url
    if broker_url:
        env["REFINERY_BROKER_URL"] = broker_url
    port = _free_port()
    env |= {
        "REFINERY_DATA_DIR": str(data),
        "REFINERY_PORT": str(port),
        "REFINERY_QUEUE_PREFIX": f"load{uuid.uuid4().hex[:8]}",
        "REFINERY_IMPORT_BUNDLED_MODEL": "false",
        "REFINERY_HUB_ENDPOINT": "",
        "REFINERY_SPARE_TRAINING_CHILD": "false",
        "REFINERY_INFERENCE_PORT": str(_free_port()),
    }
    refinery = shutil.which("refinery", path=str(Path(sys.executable).parent)) or "refinery"
    run = {"cwd": ROOT, "env": env, "check": True, "capture_output": True}
    subprocess.run([refinery, "migrate"], **run)  # type: ignore[call-overload]
    subprocess.run(  # type: ignore[call-overload]
        [refinery, "users", "create", "admin@example.com", "--password-stdin", "--admin"],
        input=f"{PASSWORD}\n".encode(),
        **run,
    )
    key = subprocess.run([refinery, "keys", "create", "admin@example.com"], text=True, **run).stdout.strip()
    result = Stack(data=data, base=f"http://127.0.0.1:{port}", key=key, env=env)
    try:
        processes = [("web", [refinery, "web"]), ("worker", [refinery, "worker"])]
        if inference:
            processes.append(("inference", [refinery, "inference"]))
        for name, argv in processes:
            log = (data / f"{name}.log").open("wb")
            result.procs.append(
                subprocess.Popen(argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
            )

        def healthy() -> bool:
            try:
                return httpx.get(f"{result.base}/healthz", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        _wait(healthy, 90, "the web app")
        result.web_pid = _listener_pid(result.procs[0].pid)
        yield result
    finally:
        import signal

        for proc in result.procs:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
        for proc in result.procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        for proc in result.procs:  # and what each left in its group (a spare training child)
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:
                try:
                    os.killpg(proc.pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.2)
            else:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)


def _listener_pid(pid: int) -> int:
    """`refinery web` may run uvicorn as a child: measure the process that serves."""
    children = Path(f"/proc/{pid}/task/{pid}/children")
    kids = children.read_text().split() if children.exists() else []
    return int(kids[0]) if kids else pid
