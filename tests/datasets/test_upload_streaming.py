"""A large upload streams to disk: the web process's memory stays flat (measured from /proc)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import ROOT, free_port, stop_process, wait_for

UPLOAD_MB = 300


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _multipart(boundary: str) -> Iterator[bytes]:
    yield (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.jsonl"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    line = b'{"prompt": "' + b"p" * 200 + b'", "completion": "' + b"c" * 800 + b'"}\n'
    chunk = line * (1024 * 1024 // len(line))
    for _ in range(UPLOAD_MB):
        yield chunk
    yield f"\r\n--{boundary}--\r\n".encode()


def test_300_mb_upload_keeps_web_memory_flat(tmp_path: Path) -> None:
    data = tmp_path / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith("REFINERY_")}
    env.update({"REFINERY_DATA_DIR": str(data), "REFINERY_IMPORT_BUNDLED_MODEL": "false"})
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
        server_pid = _listener_pid(proc.pid)
        before = _rss_kib(server_pid)
        peak = [before]
        done = threading.Event()

        def sample() -> None:
            while not done.wait(0.05):
                peak[0] = max(peak[0], _rss_kib(server_pid))

        sampler = threading.Thread(target=sample)
        sampler.start()
        boundary = "refinery-test-boundary"
        response = httpx.post(
            f"{base}/api/v1/datasets",
            content=_multipart(boundary),
            timeout=300,
            headers={"Authorization": f"Bearer {key}", "Content-Type": f"multipart/form-data; boundary={boundary}"},
        )
        done.set()
        sampler.join()
        assert response.status_code == 202, response.text
        stored = list((data / "artifacts" / "uploads").iterdir())
        assert len(stored) == 1 and stored[0].stat().st_size >= UPLOAD_MB * 1024 * 1024 * 0.99
        growth_mb = (peak[0] - before) / 1024
        print(f"web RSS before {before / 1024:.0f} MB, peak {peak[0] / 1024:.0f} MB, growth {growth_mb:.0f} MB")
        assert growth_mb < 80, f"the web process grew by {growth_mb:.0f} MB for a {UPLOAD_MB} MB upload"
    finally:
        stop_process(proc)


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
