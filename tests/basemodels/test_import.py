"""Registering base models: a local directory (real child process), pickle refusal, an unreachable hub."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from app.db.models import BaseModelRecord, ModelStatus, Run, RunStatus
from app.db.session import session_scope
from tests.conftest import csrf_of, make_admin
from worker import lifecycle


def _register(client: Any, path: Path, name: str = "tiny") -> dict[str, Any]:
    token = csrf_of(client, "/models")
    response = client.post(
        "/api/v1/models/local", json={"name": name, "path": str(path)}, headers={"X-CSRF-Token": token}
    )
    assert response.status_code == 202, response.text
    return dict(response.json())


def test_local_directory_import_records_metadata_and_stores_safetensors(
    client: Any, env: Any, tiny_model_dir: Path
) -> None:
    make_admin(client)
    model = _register(client, tiny_model_dir)
    assert model["status"] == "importing" and model["import_run"]["status"] == "queued"
    lifecycle.execute(model["import_run"]["id"])
    done = client.get(f"/api/v1/models/{model['id']}").json()
    assert done["status"] == "ready", done
    assert done["architecture"] == "LlamaForCausalLM"
    assert done["context_length"] == 2048
    assert done["num_parameters"] > 3_000_000  # the 49k-token embedding dominates the tiny model
    assert "<|im_start|>" in done["chat_template"]
    stored = env.artifacts_dir / "models" / done["id"].replace("-", "")
    assert (stored / "model.safetensors").is_file() and (stored / "config.json").is_file()
    assert not stored.with_name(stored.name + ".partial").exists()
    page = client.get(f"/models/{model['id']}")
    assert "LlamaForCausalLM" in page.text and "&lt;|im_start|&gt;" in page.text


def test_pickle_only_directory_is_refused(client: Any, tmp_path: Path, tiny_model_dir: Path) -> None:
    make_admin(client)
    bad = tmp_path / "pickled"
    bad.mkdir()
    shutil.copy(tiny_model_dir / "config.json", bad / "config.json")
    (bad / "pytorch_model.bin").write_bytes(b"\x80\x04not really a pickle")
    token = csrf_of(client, "/models")
    response = client.post(
        "/api/v1/models/local", json={"name": "bad", "path": str(bad)}, headers={"X-CSRF-Token": token}
    )
    assert response.status_code == 422
    assert "safetensors" in response.json()["error"]["message"]
    relative = client.post(
        "/api/v1/models/local", json={"name": "bad", "path": "../etc"}, headers={"X-CSRF-Token": token}
    )
    assert relative.status_code == 422 and relative.json()["error"]["field"] == "path"


def test_corrupt_safetensors_fails_with_a_clear_cause(client: Any, tmp_path: Path, tiny_model_dir: Path) -> None:
    make_admin(client)
    broken = tmp_path / "broken"
    shutil.copytree(tiny_model_dir, broken)
    (broken / "model.safetensors").write_bytes(b"\xff" * 64)
    model = _register(client, broken)
    lifecycle.execute(model["import_run"]["id"])
    with session_scope() as session:
        record = session.get(BaseModelRecord, __import__("uuid").UUID(model["id"]))
        assert record is not None and record.status == ModelStatus.failed
        run = session.get(Run, record.import_run_id)
        assert run is not None and run.status == RunStatus.failed and run.error_kind == "model_load"
        assert "safetensors" in (record.error_message or "")
    page = client.get("/models").text
    assert "Retry" in page


def test_members_cannot_register_server_directories(client: Any, tiny_model_dir: Path) -> None:
    make_admin(client)
    token = csrf_of(client, "/models")
    client.post(
        "/api/v1/users",
        json={"email": "m@example.com", "password": "member-pass-1"},
        headers={"X-CSRF-Token": token},
    )
    key = client.post("/api/v1/keys", json={"name": "k"}, headers={"X-CSRF-Token": token}).json()["key"]
    assert key  # (admin's key; the member logs in below)
    client.post("/logout", data={"csrf_token": token})
    from tests.conftest import login

    login(client, "m@example.com", "member-pass-1")
    token = csrf_of(client, "/models")
    denied = client.post(
        "/api/v1/models/local",
        json={"name": "x", "path": str(tiny_model_dir)},
        headers={"X-CSRF-Token": token},
    )
    assert denied.status_code == 403


def test_unreachable_hub_is_refused_with_a_sentence(client: Any) -> None:
    make_admin(client)
    token = csrf_of(client, "/models")
    response = client.post(
        "/api/v1/models/hub",
        json={"repo_id": "HuggingFaceTB/SmolLM2-360M-Instruct", "revision": "main"},
        headers={"X-CSRF-Token": token},
    )
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "hub_unreachable" and "cannot be reached" in error["message"]
    assert client.get("/api/v1/models").json() == []  # nothing half-registered
    page = client.post(
        "/models/hub",
        data={"repo_id": "HuggingFaceTB/SmolLM2-360M-Instruct", "revision": "main", "csrf_token": token},
    )
    assert page.status_code == 422 and "register its directory as a local model" in page.text
    bad_id = client.post("/api/v1/models/hub", json={"repo_id": "../../etc/passwd"}, headers={"X-CSRF-Token": token})
    assert bad_id.status_code == 422 and bad_id.json()["error"]["field"] == "repo_id"
