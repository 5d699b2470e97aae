"""Issue 25, finding 3: a member's cleaning rule with a catastrophic regular expression used to hold its
worker slot at 0 % indefinitely, and an administrator could not cancel that member's run (404). Now the
pattern runs with a time limit per record and the run fails naming the record and the pattern, another user's
upload validates meanwhile, and an administrator sees and cancels any user's run."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.conftest import csrf_of, login, make_admin
from worker import lifecycle

HOSTILE = "(a|aa)+Z"  # nested alternation: exponential backtracking on a run of a's without a Z


def _dataset(client: Any, tmp_path: Path, name: str, rows: list[dict[str, Any]]) -> tuple[str, str]:
    path = tmp_path / name
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with path.open("rb") as handle:
        dataset = client.post("/api/v1/datasets", files={"file": (name, handle)}, data={"split_train": "1"}).json()
    return dataset["id"], dataset["validation_run"]["id"]


def _chat(question: str, answer: str) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]}


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_catastrophic_regex_fails_in_time_and_an_admin_cancels_a_members_run(
    client: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from app.core.config import get_settings

    monkeypatch.setenv("REFINERY_USER_REGEX_TIMEOUT_SECONDS", "0.3")
    get_settings.cache_clear()
    make_admin(client)
    client.headers["X-CSRF-Token"] = csrf_of(client, "/models")
    made = client.post("/api/v1/users", json={"email": "mallory@example.com", "password": "mallory-pass-1"})
    assert made.status_code == 201
    member = TestClient(client.app)
    login(member, "mallory@example.com", "mallory-pass-1")
    member.headers["X-CSRF-Token"] = csrf_of(member, "/models")

    rows = [_chat(f"Question {i}?", "a" * 40 + "!") for i in range(6)]
    dataset_id, validation = _dataset(member, tmp_path, "mine.jsonl", rows)
    lifecycle.execute(validation)
    version = member.get(f"/api/v1/datasets/{dataset_id}").json()["versions"][0]["id"]
    steps = [{"op": "rules", "params": {"regex_exclude": HOSTILE}}]
    url = f"/api/v1/datasets/{dataset_id}/versions/{version}/cleanings"
    hostile = member.post(url, json={"steps": steps})
    assert hostile.status_code == 202, hostile.text
    hostile_run = hostile.json()["run"]["id"]

    # the hostile run and another user's upload at the same time (two worker slots)
    started = time.monotonic()
    slot = threading.Thread(target=lifecycle.execute, args=(hostile_run,))
    slot.start()
    other_id, other_validation = _dataset(client, tmp_path, "other.jsonl", [_chat("Hi?", "Hello.")] * 3)
    lifecycle.execute(other_validation)
    assert client.get(f"/api/v1/datasets/{other_id}").json()["status"] == "ready"
    slot.join(timeout=120)
    assert not slot.is_alive()
    elapsed = time.monotonic() - started

    run = member.get(f"/api/v1/runs/{hostile_run}").json()
    assert run["status"] == "failed" and run["error_code"] == "regex_timeout", run
    assert run["error_params"]["pattern"] == HOSTILE and run["error_params"]["record"] == "1"
    assert HOSTILE in run["error_message"] and "record 1" in run["error_message"]
    assert elapsed < 60, elapsed  # one record's time limit, not forever

    # an administrator sees every user's queued work and cancels a member's run
    waiting = member.post(url, json={"steps": steps}).json()["run"]["id"]
    listed = {r["id"]: r for r in client.get("/api/v1/runs").json()}
    assert listed[waiting]["owner"] == "mallory@example.com"
    assert [r["id"] for r in member.get("/api/v1/runs").json()] == [waiting]  # a member sees their own
    page = client.get("/settings/runs")
    assert f'data-run="{waiting}"' in page.text and "mallory@example.com" in page.text
    cancelled = client.post(f"/api/v1/runs/{waiting}/cancel")
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    # and a member still cannot touch the administrator's runs
    admin_run = client.post(f"/api/v1/datasets/{other_id}/validate", json={}).json()["validation_run"]["id"]
    assert member.post(f"/api/v1/runs/{admin_run}/cancel").status_code == 404
    page = client.post(f"/settings/runs/{admin_run}/cancel", data={"csrf_token": client.headers["X-CSRF-Token"]})
    assert page.status_code == 200 and client.get(f"/api/v1/runs/{admin_run}").json()["status"] == "cancelled"
