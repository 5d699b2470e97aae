"""Multipart limits and a full disk: a clear error, nothing half-stored, the web process unharmed."""

from __future__ import annotations

import resource
from pathlib import Path
from typing import Any

from tests.conftest import csrf_of, make_admin


def _stored_uploads(settings: Any) -> list[Path]:
    folder = settings.artifacts_dir / "uploads"
    return sorted(folder.iterdir()) if folder.is_dir() else []


def test_five_thousand_fields_and_a_hundred_files_are_refused(client: Any, env: Any) -> None:
    make_admin(client)
    client.headers["X-CSRF-Token"] = csrf_of(client, "/datasets")
    fields = {f"f{i}": "x" for i in range(5000)}
    many_fields = client.post("/api/v1/datasets", data=fields, files={"file": ("a.jsonl", b'{"text": "a"}\n')})
    assert many_fields.status_code == 400, many_fields.text
    assert "fields" in many_fields.json()["error"]["message"].lower()
    files = [("file", (f"f{i}.jsonl", b'{"text": "a"}\n')) for i in range(100)]
    many_files = client.post("/api/v1/datasets", files=files)
    assert many_files.status_code == 400, many_files.text
    assert "files" in many_files.json()["error"]["message"].lower()
    assert _stored_uploads(env) == []
    assert client.get("/api/v1/datasets").json() == []
    # the same limits on the form that uploads a new version to an existing dataset
    first = client.post("/api/v1/datasets", files={"file": ("a.jsonl", b'{"text": "a"}\n')}).json()
    token = client.headers.pop("X-CSRF-Token")
    page = client.post(
        f"/datasets/{first['id']}/upload", data={**fields, "csrf_token": token}, files={"file": ("a.jsonl", b"{}")}
    )
    assert page.status_code == 400 and "fields" in page.text.lower()
    page = client.post(f"/datasets/{first['id']}/upload", data={"csrf_token": token}, files=files)
    assert page.status_code == 400 and "files" in page.text.lower()
    assert len(_stored_uploads(env)) == 1


def test_a_full_disk_answers_507_and_keeps_no_partial_file(client: Any, env: Any) -> None:
    make_admin(client)
    client.headers["X-CSRF-Token"] = csrf_of(client, "/datasets")
    line = b'{"prompt": "' + b"p" * 200 + b'", "completion": "' + b"c" * 800 + b'"}\n'
    body = line * (3 * 1024 * 1024 // len(line))
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    # a file may grow to 2 MB: writing the 3 MB upload fails as on a full disk (Python ignores SIGXFSZ)
    resource.setrlimit(resource.RLIMIT_FSIZE, (2 * 1024 * 1024, hard))
    try:
        response = client.post("/api/v1/datasets", files={"file": ("big.jsonl", body)})
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    assert response.status_code == 507, response.text
    assert "disk" in response.json()["error"]["message"]
    assert _stored_uploads(env) == []
    assert client.get("/api/v1/datasets").json() == []
    # and once there is room again the same upload is stored whole
    retry = client.post("/api/v1/datasets", files={"file": ("big.jsonl", body)})
    assert retry.status_code == 202, retry.text
    [stored] = _stored_uploads(env)
    assert stored.stat().st_size == len(body)
