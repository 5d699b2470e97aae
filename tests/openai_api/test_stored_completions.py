"""Stored chat completions through the official ``openai`` client, over the real inference process on the tiny
model: ``store=True`` with metadata, whole and streamed; list (by model, metadata, paged both ways), retrieve,
messages, update, delete — every response parsed by the client's typed objects; an unstored answer is not kept,
bad metadata is refused, and another user sees none of it (404)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import openai
import pytest

from tests.conftest import csrf_of, inference_process, login

pytestmark = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)  # tests/traffic covers the table on both


@pytest.fixture
def inference(configure: Any, env: Any, tmp_path: Any) -> Iterator[dict[str, Any]]:
    with inference_process(configure, tmp_path) as running:
        yield running


def _sdk(client: Any, name: str) -> openai.OpenAI:
    key = client.post("/api/v1/keys", json={"name": name}).json()["key"]
    return openai.OpenAI(base_url="http://testserver/v1", api_key=key, http_client=client, max_retries=0)


def test_stored_completions_round_trip(client: Any, setup: dict[str, Any], inference: dict[str, Any]) -> None:
    ai = _sdk(client, "store")
    base = f"base-{setup['model']}"
    asked = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Add 1 and 1."}]
    whole = ai.chat.completions.create(
        model=base, messages=asked, max_tokens=6, temperature=0, store=True, metadata={"team": "support", "n": "1"}
    )
    streamed_chunks = list(
        ai.chat.completions.create(
            model=base,
            messages=[{"role": "user", "content": "Add 2 and 2."}],
            max_tokens=6,
            temperature=0,
            store=True,
            metadata={"team": "sales"},
            stream=True,
        )
    )
    streamed_text = "".join(c.choices[0].delta.content or "" for c in streamed_chunks if c.choices)
    ai.chat.completions.create(model=base, messages=asked, max_tokens=4, temperature=0)  # not stored

    everything = ai.chat.completions.list()
    assert [c.id for c in everything.data] == [whole.id, streamed_chunks[0].id]  # oldest first, the unstored absent
    first = ai.chat.completions.retrieve(whole.id)
    assert first.choices[0].message.content == whole.choices[0].message.content
    assert first.metadata == {"team": "support", "n": "1"} and first.model == base
    assert first.usage is not None and first.usage.completion_tokens == whole.usage.completion_tokens  # type: ignore[union-attr]
    second = ai.chat.completions.retrieve(streamed_chunks[0].id)
    assert second.choices[0].message.content == streamed_text

    # filters and paging
    assert [c.id for c in ai.chat.completions.list(metadata={"team": "sales"}).data] == [second.id]
    assert [c.id for c in ai.chat.completions.list(model="base-none").data] == []
    page = ai.chat.completions.list(limit=1)
    assert [c.id for c in page.data] == [whole.id] and page.has_more
    assert [c.id for c in ai.chat.completions.list(limit=1, after=whole.id).data] == [second.id]
    assert [c.id for c in ai.chat.completions.list(order="desc").data] == [second.id, whole.id]
    assert [c.id for c in ai.chat.completions.list(limit=1)] == [whole.id, second.id]  # the client pages on by itself

    # the request's messages, then metadata replaced, then deleted
    messages = ai.chat.completions.messages.list(whole.id)
    assert [(m.role, m.content) for m in messages.data] == [("system", "Be brief."), ("user", "Add 1 and 1.")]
    assert messages.data[0].id == f"{whole.id}-0"
    updated = ai.chat.completions.update(whole.id, metadata={"team": "support", "verdict": "good"})
    assert updated.metadata == {"team": "support", "verdict": "good"}
    assert [c.id for c in ai.chat.completions.list(metadata={"verdict": "good"}).data] == [whole.id]
    with pytest.raises(openai.BadRequestError):
        ai.chat.completions.update(whole.id, metadata={f"k{i}": "v" for i in range(17)})
    with pytest.raises(openai.BadRequestError):  # refused before anything is generated or kept
        ai.chat.completions.create(model=base, messages=asked, store=True, metadata={"k": "v" * 513})
    gone = ai.chat.completions.delete(second.id)
    assert gone.deleted and gone.id == second.id
    with pytest.raises(openai.NotFoundError):
        ai.chat.completions.retrieve(second.id)

    # another user: nothing of the first user's, by any route
    client.post("/api/v1/users", json={"email": "bob@example.com", "password": "bob-password-1"})
    client.post("/logout", data={"csrf_token": client.headers["X-CSRF-Token"]})
    del client.headers["X-CSRF-Token"]
    login(client, "bob@example.com", "bob-password-1")
    client.headers["X-CSRF-Token"] = csrf_of(client, "/models")
    bob = _sdk(client, "bob")
    assert bob.chat.completions.list().data == []
    for call in (
        lambda: bob.chat.completions.retrieve(whole.id),
        lambda: bob.chat.completions.messages.list(whole.id),
        lambda: bob.chat.completions.update(whole.id, metadata={"x": "y"}),
        lambda: bob.chat.completions.delete(whole.id),
    ):
        with pytest.raises(openai.NotFoundError):
            call()
    assert ai.chat.completions.retrieve(whole.id).metadata == {"team": "support", "verdict": "good"}


def test_stored_completions_past_the_retention_period_are_deleted(client: Any, configure: Any) -> None:
    import time
    from datetime import UTC, datetime

    from app.db.models import Role, StoredCompletion
    from app.db.session import session_scope
    from app.openai_api.stored import purge_expired, store
    from app.users.service import create_user

    with session_scope() as session:
        owner = create_user(session, email="a@example.com", password="a-long-password-1", role=Role.member)
        session.flush()
        session.expunge(owner)
    now = int(time.time())
    for name, age_days in (("old", 3), ("new", 0)):
        store(owner=owner, completion_id=f"chatcmpl-{name:0<24}", created=now - age_days * 86400, model="m",
              messages=[{"role": "user", "content": "q"}], answer="a", finish_reason="stop", usage=None,
              request={}, metadata=None)  # fmt: skip
    with session_scope() as session:
        assert purge_expired(session) == 0  # 0 days: kept for ever (the default)
    configure(stored_completion_retention_days=2)
    with session_scope() as session:
        assert purge_expired(session, now=datetime.now(UTC)) == 1
    with session_scope() as session:
        assert [r.completion_id for r in session.query(StoredCompletion)] == [f"chatcmpl-{'new':0<24}"]
