"""A large upload streams to disk: the web process's memory stays flat (measured from /proc)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import ROOT, free_port, stop_process, wait_for

UPLOAD_MB = 300


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _multipart(boundary: str, megabytes: int) -> Iterator[bytes]:
    yield (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.jsonl"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    line = b'{"prompt": "' + b"p" * 200 + b'", "completion": "' + b"c" * 800 + b'"}\n'
    chunk = line * (1024 * 1024 // len(line))
    for _ in range(megabytes):
        yield chunk
    yield f"\r\n--{boundary}--\r\n".encode()


@pytest.fixture(scope="module")
def web(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """`refinery web` in its own process (uploads capped at 1 GB), an admin and an API key."""
    data = tmp_path_factory.mktemp("upload-web") / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith("REFINERY_")}
    env.update({"REFINERY_DATA_DIR": str(data), "REFINERY_IMPORT_BUNDLED_MODEL": "false"})
    env["REFINERY_MAX_UPLOAD_BYTES"] = str(1024**3)
    subprocess.run([sys.executable, "-m", "app.cli", "migrate"], cwd=ROOT, env=env, check=True, capture_output=True)
    subprocess.run(
        [sys.executable, "-m", "app.cli", "users", "create", "a@example.com", "--password-stdin", "--admin"],
        cwd=ROOT,
        env=env,
        input=b"admin-password-1\n",
        check=True,
        capture_output=True,
    )
    key = subprocess.run(
        [sys.executable, "-m", "app.cli", "keys", "create", "a@example.com"],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    port = free_port()
    env["REFINERY_PORT"] = str(port)
    proc = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "web"],
        cwd=ROOT,
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _ok(f"{base}/healthz"), timeout=60, what="web")
        yield {"base": base, "key": key, "data": data, "pid": _listener_pid(proc.pid)}
    finally:
        stop_process(proc)


class PeakRss:
    """Samples a process's resident memory every 50 ms while the block runs."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.before = self.peak = _rss_kib(pid)
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample)

    def _sample(self) -> None:
        while not self._done.wait(0.05):
            self.peak = max(self.peak, _rss_kib(self.pid))

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()

    @property
    def growth_mb(self) -> float:
        return (self.peak - self.before) / 1024


def _uploads(data: Path) -> list[Path]:
    folder = data / "artifacts" / "uploads"
    return sorted(folder.iterdir()) if folder.is_dir() else []


def test_300_mb_upload_keeps_web_memory_flat(web: dict[str, Any]) -> None:
    before = _uploads(web["data"])
    boundary = "refinery-test-boundary"
    with PeakRss(web["pid"]) as rss:
        response = httpx.post(
            f"{web['base']}/api/v1/datasets",
            content=_multipart(boundary, UPLOAD_MB),
            timeout=300,
            headers={
                "Authorization": f"Bearer {web['key']}",
                "Content-Type": f"multipart/form-data; boundary={boundary}",
            },
        )
    assert response.status_code == 202, response.text
    [stored] = [p for p in _uploads(web["data"]) if p not in before]
    assert stored.stat().st_size >= UPLOAD_MB * 1024 * 1024 * 0.99
    print(f"web RSS before {rss.before / 1024:.0f} MB, peak {rss.peak / 1024:.0f} MB, growth {rss.growth_mb:.0f} MB")
    assert rss.growth_mb < 80, f"the web process grew by {rss.growth_mb:.0f} MB for a {UPLOAD_MB} MB upload"


def test_a_2_gb_body_without_an_honest_length_is_cut_off_at_the_cap(web: dict[str, Any]) -> None:
    """Chunked, so no Content-Length to check up front: the bytes received are counted and the request is
    refused at the cap (1 GB here), the partial file is removed and the web process's memory stays flat."""
    before = _uploads(web["data"])
    boundary = "refinery-test-boundary"
    headers = {"Authorization": f"Bearer {web['key']}", "Content-Type": f"multipart/form-data; boundary={boundary}"}
    with PeakRss(web["pid"]) as rss:
        try:
            response = httpx.post(
                f"{web['base']}/api/v1/datasets", content=_multipart(boundary, 2048), timeout=300, headers=headers
            )
            status: int | None = response.status_code
        except httpx.HTTPError:  # the server may close the connection while the client is still sending
            status = None
    assert status in (413, None)
    assert _uploads(web["data"]) == before
    assert not list((web["data"] / "artifacts" / "uploads").glob("*.partial"))
    assert rss.growth_mb < 80, f"the web process grew by {rss.growth_mb:.0f} MB for a 2 GB body"
    # a declared length over the cap is refused before a byte of the body is read (raw socket: clients
    # refuse to send fewer bytes than they declare)
    host, port = web["base"].removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(
            (
                f"POST /api/v1/datasets HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {web['key']}\r\n"
                f"Content-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: {2 * 1024**3}\r\n\r\n"
            ).encode()
        )
        received = b""
        while chunk := sock.recv(65536):  # the server closes the connection after its answer
            received += chunk
        answer = received.decode()
    assert answer.startswith("HTTP/1.1 413") and "limit" in answer
    # JSON routes have a 1 MB cap, counted the same way
    huge_json = httpx.post(
        f"{web['base']}/api/v1/keys",
        content=(b'{"name": "' + b"x" * 1024 * 1024 for _ in range(8)),
        headers={"Authorization": f"Bearer {web['key']}", "Content-Type": "application/json"},
        timeout=60,
    )
    assert huge_json.status_code == 413
    assert httpx.get(f"{web['base']}/healthz", timeout=5).status_code == 200


def _ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _listener_pid(pid: int) -> Any:
    """`refinery web` runs uvicorn as a child; measure that process."""
    children = Path(f"/proc/{pid}/task/{pid}/children")
    kids = children.read_text().split() if children.exists() else []
    return int(kids[0]) if kids else pid
