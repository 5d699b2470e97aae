"""The official ``openai`` package against Refinery's /v1: models and files (uploads that become datasets),
OpenAI-shaped errors with the right status, nothing of another user's."""

from __future__ import annotations

import json
from typing import Any

import openai
import pytest

from tests.conftest import csrf_of, login, make_admin
from worker import lifecycle


def api_client(client: Any) -> openai.OpenAI:
    """An OpenAI client over the test app (the TestClient is an httpx client), with a fresh API key."""
    secret = client.post("/api/v1/keys", json={"name": "openai"}).json()["key"]
    return openai.OpenAI(base_url="http://testserver/v1", api_key=secret, http_client=client, max_retries=0)


def validate(client: Any, file_id: str) -> None:
    dataset = client.get(f"/api/v1/datasets/{file_id.removeprefix('file-')}").json()
    lifecycle.execute(dataset["validation_run"]["id"])


def chat_lines(n: int) -> bytes:
    rows = [
        {"messages": [{"role": "user", "content": f"Double {i}."}, {"role": "assistant", "content": str(2 * i)}]}
        for i in range(n)
    ]
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


def test_models_and_files_through_the_openai_package(client: Any, setup: dict[str, Any]) -> None:
    ai = api_client(client)
    base = "tiny"  # a readable id: the slug of the model's name
    assert base in [m.id for m in ai.models.list().data]
    assert ai.models.retrieve(f"base-{setup['model']}").id == base  # the older id keeps working
    with pytest.raises(openai.NotFoundError) as missing:
        ai.models.retrieve("gpt-4o")
    assert missing.value.code == "model_not_found" and "gpt-4o" in missing.value.message

    content = chat_lines(40)
    created = ai.files.create(file=("train.jsonl", content), purpose="fine-tune")
    assert created.id.startswith("file-") and created.status == "uploaded" and created.bytes == len(content)
    validate(client, created.id)
    assert ai.files.retrieve(created.id).status == "processed"
    assert ai.files.content(created.id).read() == content
    listed = [f.id for f in ai.files.list().data]
    assert created.id in listed and len(listed) == 2  # the setup's dataset (made in the UI) is a file too
    # the upload is a dataset in the UI as well
    assert "train.jsonl" in client.get("/datasets").text

    # OpenAI's tool-calling lines (current and legacy shapes) upload and validate as they are
    from tests.datasets.test_openai_files import LEGACY_FUNCTIONS, TOOLS, WEIGHTED

    tool_lines = "".join(json.dumps(r) + "\n" for r in (TOOLS, LEGACY_FUNCTIONS, WEIGHTED)).encode()
    tools_file = ai.files.create(file=("tools.jsonl", tool_lines), purpose="fine-tune")
    validate(client, tools_file.id)
    assert ai.files.retrieve(tools_file.id).status == "processed"
    assert ai.files.content(tools_file.id).read() == tool_lines  # the upload is kept as it came
    ai.files.delete(tools_file.id)

    bad = b'{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "ho"}]}\n{oops\n'
    broken = ai.files.create(file=("broken.jsonl", bad), purpose="fine-tune")
    validate(client, broken.id)
    checked = ai.files.retrieve(broken.id)
    assert checked.status == "error" and "line 2" in (checked.status_details or ""), checked.status_details
    # a file with four bad lines names all four, the first three with their reasons
    four = bad.replace(b"{oops\n", b"{oops\n[1]\n{}\n" + b'{"messages": "x"}\n')
    four_bad = ai.files.create(file=("four.jsonl", four), purpose="fine-tune")
    validate(client, four_bad.id)
    details = ai.files.retrieve(four_bad.id).status_details or ""
    assert "(lines 2, 3, 4, 5)" in details and "line 2:" in details and "line 4:" in details, details
    ai.files.delete(four_bad.id)

    with pytest.raises(openai.BadRequestError) as wrong_purpose:
        ai.files.create(file=("x.jsonl", content), purpose="assistants")
    assert wrong_purpose.value.status_code == 400 and wrong_purpose.value.param == "purpose"

    assert ai.files.delete(broken.id).deleted is True
    with pytest.raises(openai.NotFoundError):
        ai.files.retrieve(broken.id)
    with pytest.raises(openai.NotFoundError):
        ai.files.retrieve("file-nothing")

    # a file a job trained on stays
    version = client.get(f"/api/v1/datasets/{created.id.removeprefix('file-')}").json()["versions"][0]
    spec = {"max_steps": 1, "max_seq_length": 64}
    client.post("/api/v1/jobs", json={"model_id": setup["model"], "dataset_version_id": version["id"], "spec": spec})
    with pytest.raises(openai.ConflictError):
        ai.files.delete(created.id)

    # wrong key: 401 in OpenAI's shape; another user sees no file of this one
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url="http://testserver/v1", api_key="rf-wrong", http_client=client).models.list()
    client.post("/api/v1/users", json={"email": "eve@example.com", "password": "eve-password-1"})
    client.post("/logout", data={"csrf_token": client.headers.pop("X-CSRF-Token")})
    login(client, "eve@example.com", "eve-password-1")
    client.headers["X-CSRF-Token"] = csrf_of(client, "/models")
    eve = api_client(client)
    with pytest.raises(openai.NotFoundError):
        eve.files.retrieve(created.id)
    with pytest.raises(openai.NotFoundError):
        eve.files.content(created.id)
    assert eve.files.list().data == []
    assert eve.models.list().data == []  # the tiny model was imported privately by the admin
    with pytest.raises(openai.NotFoundError):
        eve.models.retrieve(base)


@pytest.mark.parametrize("db_url", ["sqlite", "postgres"], indirect=True)  # the cursor is SQL on both
def test_fine_tuning_jobs_are_paged_in_sql_newest_first(client: Any, setup: dict[str, Any]) -> None:
    spec = {"max_steps": 1, "batch_size": 2, "eval_steps": 0, "max_seq_length": 32}
    made = []
    for i in range(5):
        body = {"name": f"j{i}", "model_id": setup["model"], "dataset_version_id": setup["version"], "spec": spec}
        created = client.post("/api/v1/jobs", json=body)
        assert created.status_code == 201, created.text
        made.append(created.json()["id"].replace("-", ""))
    ai = api_client(client)
    first = ai.fine_tuning.jobs.list(limit=2)
    assert [j.id for j in first.data] == [f"ftjob-{made[4]}", f"ftjob-{made[3]}"] and first.has_more
    walked = [job.id for job in ai.fine_tuning.jobs.list(limit=2)]  # the client follows the pages itself
    assert walked == [f"ftjob-{m}" for m in reversed(made)]
    last = ai.fine_tuning.jobs.list(limit=2, after=f"ftjob-{made[1]}")
    assert [j.id for j in last.data] == [f"ftjob-{made[0]}"] and not last.has_more
    assert ai.fine_tuning.jobs.list(after="ftjob-not-an-id").data == []


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_files_are_paged_in_sql_both_ways(client: Any) -> None:
    make_admin(client)
    client.headers["X-CSRF-Token"] = csrf_of(client, "/models")
    ai = api_client(client)
    made = [ai.files.create(file=(f"f{i}.jsonl", b'{"text": "a b"}\n'), purpose="fine-tune").id for i in range(5)]
    first = ai.files.list(limit=2)
    assert [f.id for f in first.data] == [made[4], made[3]] and first.has_more
    assert [f.id for f in ai.files.list(limit=2)] == list(reversed(made))  # the client follows the pages
    assert [f.id for f in ai.files.list(limit=2, order="asc")] == made
    last = ai.files.list(limit=3, after=made[2])
    assert [f.id for f in last.data] == [made[1], made[0]] and not last.has_more
    assert ai.files.list(after="file-not-an-id").data == []
