"""Issue 25, finding 8: `refinery up` checks every port it needs before it says it is running. A default
port that is taken (a second instance on the machine) is replaced by a free one and printed; a port the
operator chose that is taken stops the start with the port and the setting that changes it."""

from __future__ import annotations

import os
import re
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port, refinery_command, service_process, wait_for

pytestmark = pytest.mark.serial  # measures time or latency, or kills services: runs alone


@contextmanager
def occupied(port: int) -> Iterator[bool]:
    """Listen on 127.0.0.1:port (False if something else already does: the port is taken either way)."""
    sock = socket.socket()
    try:
        sock.bind(("127.0.0.1", port))
        sock.listen()
    except OSError:
        sock.close()
        yield False
        return
    try:
        yield True
    finally:
        sock.close()


def _env(data: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REFINERY_")}
    env.update({"REFINERY_DATA_DIR": str(data), "REFINERY_IMPORT_BUNDLED_MODEL": "false", "REFINERY_HUB_ENDPOINT": ""})
    env.update(extra)
    return env


def test_a_chosen_port_that_is_taken_stops_the_start_with_the_setting(tmp_path: Path) -> None:
    port = free_port()
    with occupied(port):
        env = _env(tmp_path / "data", REFINERY_PORT=str(free_port()), REFINERY_INFERENCE_PORT=str(port))
        done = subprocess.run([refinery_command(), "up"], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert f"Port {port}" in done.stderr and "REFINERY_INFERENCE_PORT" in done.stderr, done.stderr[-2000:]
    assert "is running" not in done.stdout


@pytest.mark.timeout(300)
def test_a_second_instance_moves_off_the_default_inference_port(tmp_path: Path) -> None:
    web = free_port()
    with occupied(8001):  # the default inference port, as a first instance would hold it
        env = _env(tmp_path / "data", REFINERY_PORT=str(web))
        log = tmp_path / "up.log"
        with service_process(
            [refinery_command(), "up"],
            env=env,
            log=log,
            health_url=f"http://127.0.0.1:{web}/healthz",
            what="the second refinery up",
        ):
            moved = wait_for(
                lambda: re.search(r"Port 8001 for the inference process is taken; using (\d+)", log.read_text()),
                timeout=30,
                what="the note of the moved port",
            )
            port = int(moved.group(1))
            health = wait_for(
                lambda: _answers(f"http://127.0.0.1:{port}/healthz"), timeout=120, what="the inference process"
            )
            assert health["ok"] is True
            wait_for(lambda: "is running at" in log.read_text(), timeout=30, what="the running line")


def _answers(url: str) -> dict[str, object] | None:
    try:
        answer = httpx.get(url, timeout=2)
    except httpx.HTTPError:
        return None
    return answer.json() if answer.status_code == 200 else None
