"""The Traffic page and its API: stored completions listed and filtered, marked good or bad, corrected, and made
into a dataset (conversations with the corrections, or preference pairs) that validates like an upload and
remembers where it came from; user text shown as text; another user's answers are invisible and unchangeable."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from tests.conftest import csrf_of, login
from worker import lifecycle

pytestmark = pytest.mark.parametrize("db_url", ["sqlite", "postgres"], indirect=True)


def _served(client: Any) -> dict[str, str]:
    """Five answers as /v1/chat/completions with store=True would keep them (no model needed here)."""
    from app.db.models import User
    from app.db.session import session_scope
    from app.openai_api.stored import store

    me = uuid.UUID(client.get("/api/v1/me").json()["id"])
    with session_scope() as session:
        owner = session.get(User, me)
        session.expunge(owner)
    served = {
        "capital": ("What is the capital of France?", "Lyon.", {"team": "support"}),
        "capital-again": ("What is the capital of France?", "Paris.", {"team": "support"}),
        "sum": ("Add 2 and 2.", "4", {"team": "sales"}),
        "hostile": ("<script>window.x=1</script>", "<img src=x onerror=alert(1)>", {"team": "support"}),
        "poem": ("Write a poem.", "Roses are red", {"team": "support"}),
        "poem-again": ("Write a poem.", "The sea at noon, the gulls asleep.", {"team": "support"}),
    }
    ids = {}
    for index, (name, (question, answer, metadata)) in enumerate(served.items()):
        ids[name] = f"chatcmpl-{name.replace('-', '')[:10]:0<24}"
        store(owner=owner, completion_id=ids[name], created=1_800_000_000 + index, model="base-x",
              messages=[{"role": "user", "content": question}], answer=answer, finish_reason="stop", usage=None,
              request={"temperature": 0}, metadata=metadata)  # fmt: skip
    return ids


def test_review_filter_and_make_datasets(client: Any, setup: dict[str, Any]) -> None:
    ids = _served(client)
    page = client.get("/traffic")
    assert page.status_code == 200 and all(i in page.text for i in ids.values())
    assert "&lt;img src=x onerror=alert(1)&gt;" in page.text and "<img src=x" not in page.text  # shown as text

    # review on the page: a thumbs down, a correction, a thumbs up
    token = client.headers["X-CSRF-Token"]
    form = {"csrf_token": token, "back": "review=any"}
    assert client.post(f"/traffic/{ids['capital']}/review", data={**form, "rating": "bad"}).status_code == 200
    client.post(f"/traffic/{ids['capital']}/review", data={**form, "correction": "Paris."})
    client.post(f"/traffic/{ids['capital-again']}/review", data={**form, "rating": "good"})
    client.post(f"/traffic/{ids['poem']}/review", data={**form, "rating": "bad"})
    client.post(f"/traffic/{ids['poem-again']}/review", data={**form, "rating": "good"})
    assert client.post(f"/traffic/{ids['sum']}/review", data={**form, "rating": "great"}).status_code == 422

    def listed(**params: Any) -> list[str]:
        rows = client.get("/api/v1/traffic", params=params).json()
        return [r["completion"]["id"] for r in rows]

    assert listed(review="corrected") == [ids["capital"]]
    assert listed(review="bad") == [ids["poem"], ids["capital"]]  # newest first
    assert listed(review="unrated") == [ids["hostile"], ids["sum"]]
    assert listed(metadata="team=sales") == [ids["sum"]] and listed(q="FRANCE") == [
        ids["capital-again"],
        ids["capital"],
    ]
    assert "Paris." in client.get("/traffic", params={"review": "corrected"}).text

    # conversations: the correction replaces the answer, the bad one without a correction is left out
    made = client.post(
        "/traffic/dataset", data={"csrf_token": token, "metadata": "team=support", "name": "from traffic"}
    )
    assert made.status_code == 200 and "/datasets/" in str(made.url)
    dataset_id = str(made.url).rstrip("/").rsplit("/", 1)[1]
    dataset = client.get(f"/api/v1/datasets/{dataset_id}").json()
    lifecycle.execute(dataset["validation_run"]["id"])
    dataset = client.get(f"/api/v1/datasets/{dataset_id}").json()
    assert dataset["name"] == "from traffic" and dataset["status"] in ("ready", "needs_review"), dataset
    version = dataset["versions"][0]
    records = client.get(f"/api/v1/datasets/{dataset_id}/versions/{version['id']}/records").json()["records"]
    answers = sorted(json.dumps(r["data"]["messages"][-1]["content"]) for r in records)
    kept = ("Paris.", "Paris.", "<img src=x onerror=alert(1)>", "The sea at noon, the gulls asleep.")
    assert answers == sorted(json.dumps(a) for a in kept)
    assert set(listed(unused=True)) == {ids["sum"], ids["poem"]}  # the used ones remember their dataset
    assert client.get("/api/v1/traffic", params={"q": "capital"}).json()[0]["dataset_id"] == dataset_id
    lineage = client.get(f"/datasets/{dataset_id}").text  # the dataset names where it came from, and links there
    assert "made from 4 stored answers" in lineage and f"/traffic?dataset={dataset_id}" in lineage
    assert len(listed(dataset=dataset_id)) == 4 and ids["poem"] not in listed(dataset=dataset_id)

    # preference pairs: the correction over the answer, the good answer over the bad one to the same question
    pairs = client.post("/api/v1/traffic/datasets", json={"kind": "preference", "metadata": "team=support"}).json()
    assert pairs["records"] == 2
    preference = client.get(f"/api/v1/datasets/{pairs['dataset_id']}").json()
    lifecycle.execute(preference["validation_run"]["id"])
    preference = client.get(f"/api/v1/datasets/{pairs['dataset_id']}").json()
    assert preference["record_format"] == "preference" and preference["status"] in ("ready", "needs_review")
    nothing = client.post("/api/v1/traffic/datasets", json={"kind": "preference", "metadata": "team=sales"})
    assert nothing.status_code == 422 and "no records" in nothing.json()["error"]["message"]

    # another user: no traffic, and no way to review the first user's
    client.post("/api/v1/users", json={"email": "bob@example.com", "password": "bob-password-1"})
    client.post("/logout", data={"csrf_token": token})
    del client.headers["X-CSRF-Token"]
    login(client, "bob@example.com", "bob-password-1")
    bob_token = csrf_of(client, "/models")
    client.headers["X-CSRF-Token"] = bob_token
    assert client.get("/api/v1/traffic").json() == []
    assert ids["capital"] not in client.get("/traffic").text
    assert client.put(f"/api/v1/traffic/{ids['sum']}", json={"rating": "good"}).status_code == 404
    assert (
        client.post(f"/traffic/{ids['sum']}/review", data={"csrf_token": bob_token, "rating": "good"}).status_code
        == 404
    )
    bobs = client.post("/api/v1/traffic/datasets", json={"kind": "sft"})
    assert bobs.status_code == 422  # nothing of his own to make one from
