"""Shared by the job tests: an admin with the tiny model imported and a small chat dataset validated."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import csrf_of, make_admin
from worker import lifecycle


@pytest.fixture
def setup(client: Any, tiny_model_dir: Path, tmp_path: Path) -> dict[str, Any]:
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
    return {"model": model["id"], "version": version["id"]}
