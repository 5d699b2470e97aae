"""Redis and PostgreSQL restarted under a running platform. Each test starts its own server on a random
loopback port (so that it can kill and restart it), bounds every wait, and stops what it started by pid.

- Redis restarted with queued jobs: the messages are gone (this Redis keeps nothing on disk); the API
  answered quickly while it was down (the run is recorded, /healthz says 503); the worker's reconciler
  re-sends every queued run from the database and each runs exactly once.
- PostgreSQL restarted mid-run: the API answers 503 while it is down; the worker's heartbeats fail and are
  retried; the child finishes during the outage and the worker records the end once the database is back;
  no event that was acknowledged is lost and the run was attempted once.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REQUIRE_SERVICES, free_port, stop_process, wait_for

pytestmark = pytest.mark.serial  # measures time or latency, or kills services: runs alone


class Server:
    """A server process we start, kill and start again on the same port."""

    def __init__(self, argv: list[str], port: int, log: Path) -> None:
        self.argv, self.port, self.log = argv, port, log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        import socket

        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(self.argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)

        def listening() -> bool:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return True
            except OSError:
                return False

        wait_for(listening, timeout=30, interval=0.1, what=f"{self.argv[0]} on port {self.port}")

    def kill(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, timeout=20)
            self.proc = None


def _binary(name: str) -> str:
    found = shutil.which(name) or next(iter(sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"))), None)
    if not found:
        message = f"{name} is not installed (.ci/services installs PostgreSQL and Redis)"
        if REQUIRE_SERVICES:
            pytest.fail(message)
        pytest.skip(message)
    return str(found)


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[Server]:
    port = free_port()
    argv = [_binary("redis-server"), "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    server = Server(argv, port, tmp_path / "redis.log")
    server.start()
    try:
        yield server
    finally:
        server.kill()


def _as_postgres(argv: list[str]) -> list[str]:
    """initdb and postgres refuse to run as root: run them as the postgres user then."""
    return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else argv


@pytest.fixture
def own_postgres() -> Iterator[Server]:
    initdb, postgres = _binary("initdb"), _binary("postgres")
    folder = Path(tempfile.mkdtemp(prefix="refinery-pg-"))  # not under pytest's root-only folders
    try:
        if os.geteuid() == 0:
            shutil.chown(folder, "postgres", "postgres")
        data = folder / "data"
        subprocess.run(
            _as_postgres([initdb, "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8"]),
            check=True,
            capture_output=True,
            timeout=120,
        )
        port = free_port()
        argv = [postgres, "-D", str(data), "-p", str(port), "-k", str(folder), "-c", "listen_addresses=127.0.0.1"]
        argv += ["-c", "fsync=off"]
        server = Server(_as_postgres(argv), port, folder / "postgres.log")
        server.start()
        try:
            import psycopg

            url = f"postgresql://postgres@127.0.0.1:{port}/postgres"
            wait_for(lambda: _connects(url), timeout=30, what="PostgreSQL accepting connections")
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute("CREATE DATABASE refinery")
            yield server
        finally:
            server.kill()
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _connects(url: str) -> bool:
    import psycopg

    try:
        psycopg.connect(url, connect_timeout=2).close()
        return True
    except psycopg.Error:
        return False


def _timed(call: Any) -> tuple[Any, float]:
    started = time.monotonic()
    result = call()
    return result, time.monotonic() - started


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)  # ownership and leases are the same SQL on both
def test_redis_restarted_with_queued_jobs(
    configure: Any, env: Any, own_redis: Server, tmp_path: Path, tiny_model_dir: Path
) -> None:
    from fastapi.testclient import TestClient

    from app.main import create_app
    from tests.conftest import csrf_of, make_admin
    from tests.runs.test_queue_workers import _start_worker

    settings = configure(broker_url=f"redis://127.0.0.1:{own_redis.port}/0")
    with TestClient(create_app()) as client:
        make_admin(client)
        client.headers["X-CSRF-Token"] = csrf_of(client, "/models")

        def import_model(name: str) -> tuple[Any, float]:
            return _timed(lambda: client.post("/api/v1/models/local", json={"name": name, "path": str(tiny_model_dir)}))

        # two runs queued in Redis while no worker runs; then Redis dies and its messages with it
        queued = [import_model(f"before-{i}")[0].json() for i in range(2)]
        own_redis.kill()
        health, health_s = _timed(lambda: client.get("/healthz"))
        assert health.status_code == 503 and health.json()["checks"]["broker"] == "unreachable"
        during = [import_model(f"during-{i}") for i in range(2)]
        for response, seconds in during:
            assert response.status_code == 202 and response.json()["import_run"]["status"] == "queued", response.text
            assert seconds < 10, f"the API took {seconds:.1f}s while Redis was down"
        assert health_s < 10
        own_redis.start()  # empty: every message sent before is gone
        assert client.get("/healthz").status_code == 200
        worker = _start_worker(settings, tmp_path / "worker.log")
        try:
            ids = [m["id"] for m in queued] + [r.json()["id"] for r, _ in during]

            def all_ready() -> bool:
                return all(client.get(f"/api/v1/models/{i}").json()["status"] == "ready" for i in ids)

            wait_for(all_ready, timeout=180, interval=1, what="every queued import")
        finally:
            stop_process(worker)
            print((tmp_path / "worker.log").read_text()[-3000:])
        for model_id in ids:
            run_id = client.get(f"/api/v1/models/{model_id}").json()["import_run"]["id"]
            events = [e["message"] for e in client.get(f"/api/v1/runs/{run_id}/events").json()]
            assert sum(e.startswith("Started attempt") for e in events) == 1, events


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)  # the database of this test is its own server
def test_postgres_restarted_mid_run(
    configure: Any, env: Any, own_postgres: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fastapi.testclient import TestClient

    from app.db.migrations import upgrade_to_head
    from app.main import create_app
    from tests.conftest import make_admin
    from tests.runs.test_lifecycle import ScriptHandler, _create, _events, _get
    from worker import lifecycle
    from worker.jobs import HANDLERS

    configure(
        database_url=f"postgresql+psycopg://postgres@127.0.0.1:{own_postgres.port}/refinery",
        heartbeat_seconds=0.5,
        lease_ttl_seconds=60,
    )
    upgrade_to_head()
    monkeypatch.setitem(HANDLERS, "test_script", ScriptHandler())
    with TestClient(create_app()) as client:
        make_admin(client)
        run_id = _create(tmp_path, steps=6, sleep=0.5)
        worker = threading.Thread(target=lifecycle.execute, args=(str(run_id),))
        worker.start()
        try:
            wait_for(lambda: (tmp_path / "pid").exists(), timeout=30, what="the child")
            wait_for(lambda: _get(run_id).progress > 0, timeout=30, what="a heartbeat with progress")
            acknowledged = _events(run_id)
            own_postgres.kill()
            down, seconds = _timed(lambda: client.get(f"/api/v1/runs/{run_id}"))
            assert down.status_code == 503 and "database" in down.json()["error"]["message"], down.text
            assert seconds < 10
            assert client.get("/healthz").status_code == 503
            time.sleep(4)  # the child (3 s in all) finishes while the database is down
            assert worker.is_alive()  # the worker keeps retrying to record the end
            own_postgres.start()
            worker.join(timeout=60)
            assert not worker.is_alive()
        finally:
            if own_postgres.proc is None:  # a failure while it was down: bring it back for the checks
                own_postgres.start()
            worker.join(timeout=60)
        run = _get(run_id)
        assert run.status == "succeeded" and run.attempt == 1, (run.status, run.attempt, run.error)
        events = _events(run_id)
        assert events[: len(acknowledged)] == acknowledged  # nothing acknowledged was lost
        assert (tmp_path / "attempts").read_text() == "x"  # the child ran once
        assert client.get(f"/api/v1/runs/{run_id}").status_code == 200
