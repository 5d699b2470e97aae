"""Issue 25, finding 4: a prompt longer than the model's context was accepted, and one long request held
the inference process's single lock while another user's one-token request waited 59 s, still held after its
client gave up. Now: over-long prompts are refused with OpenAI's error (through the official client too), an
answer ends at its time budget, a client that disconnects frees the model at the next token, and waiting
requests are served in turns per user."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import inference_process

pytestmark = pytest.mark.serial  # measures time or latency, or kills services: runs alone


@pytest.fixture
def inference(configure: Any, env: Any, tmp_path: Any) -> Iterator[dict[str, Any]]:
    """The inference process with a 6-second budget per answer."""
    with inference_process(configure, tmp_path, inference_max_seconds=6) as running:
        yield running


def _ask(inference: dict[str, Any], model: str, *, who: str, max_tokens: int, text: str = "Hi") -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": text}], "max_tokens": max_tokens, "user": who}
    auth = {"Authorization": f"Bearer {inference['key']}"}
    return httpx.post(f"{inference['url']}/v1/chat/completions", json=body, headers=auth, timeout=120)


def _waiting(inference: dict[str, Any]) -> int:
    return int(httpx.get(f"{inference['url']}/healthz", timeout=5).json()["waiting"])


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_long_prompts_budgets_disconnects_and_turns(
    client: Any, setup: dict[str, Any], inference: dict[str, Any]
) -> None:
    base = f"base-{setup['model']}"
    _ask(inference, base, who="warm", max_tokens=1)  # load the model once

    # a prompt past the context (the tiny model's is 2048 tokens): OpenAI's error, at once
    long_prompt = "word " * 13_000
    started = time.monotonic()
    refused = _ask(inference, base, who="a", max_tokens=1, text=long_prompt)
    assert refused.status_code == 400 and time.monotonic() - started < 10
    error = refused.json()["error"]
    assert error["code"] == "context_length_exceeded" and error["param"] == "messages" and "2048" in error["message"]
    secret = client.post("/api/v1/keys", json={"name": "openai"}).json()["key"]
    ai = openai.OpenAI(base_url="http://testserver/v1", api_key=secret, http_client=client, max_retries=0)
    with pytest.raises(openai.BadRequestError) as through_web:
        ai.chat.completions.create(model=base, messages=[{"role": "user", "content": long_prompt}], max_tokens=1)
    assert through_web.value.code == "context_length_exceeded" and through_web.value.param == "messages"

    # an answer that would run for minutes ends at the time budget, cut as 'length'
    started = time.monotonic()
    budgeted = _ask(inference, base, who="a", max_tokens=4096)
    assert budgeted.status_code == 200 and budgeted.json()["choices"][0]["finish_reason"] == "length"
    assert 5 < time.monotonic() - started < 30

    # a streaming client that goes away: the model is free at the next token, the next user is answered
    body = {"model": base, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4096, "stream": True}
    auth = {"Authorization": f"Bearer {inference['key']}"}
    with httpx.stream(
        "POST", f"{inference['url']}/v1/chat/completions", json={**body, "user": "a"}, headers=auth, timeout=60
    ) as stream:
        for line in stream.iter_lines():
            if '"content"' in line and '"content": ""' not in line:
                break  # it is generating; hang up
    started = time.monotonic()
    short = _ask(inference, base, who="b", max_tokens=1)
    assert short.status_code == 200 and time.monotonic() - started < 3, time.monotonic() - started

    # turns: user a queues three long answers, then user b asks for one token; b is served second, not fourth
    finished: dict[str, float] = {}

    def run(name: str, who: str, tokens: int) -> None:
        answer = _ask(inference, base, who=who, max_tokens=tokens)
        assert answer.status_code == 200, answer.text
        finished[name] = time.monotonic()

    threads = [threading.Thread(target=run, args=(f"a{i}", "a", 4096)) for i in range(3)]
    threads[0].start()
    time.sleep(0.5)
    for thread in threads[1:]:
        thread.start()
    deadline = time.monotonic() + 20
    while _waiting(inference) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    b = threading.Thread(target=run, args=("b", "b", 1))
    b.start()
    for thread in [*threads, b]:
        thread.join(timeout=120)
    order = sorted(finished, key=finished.__getitem__)
    assert order[0] == "a0" and order[1] == "b", order
    assert finished["b"] - finished["a0"] < 3, finished  # b did not wait behind a's other two (6 s each)


def test_fair_lock_serves_users_in_turns() -> None:
    from worker.inference.scheduling import FairLock

    lock = FairLock()
    never = threading.Event()
    assert lock.acquire("a", never)
    order: list[str] = []

    def wait(name: str, who: str) -> None:
        assert lock.acquire(who, never)
        order.append(name)
        lock.release()

    waiters = [("a1", "a"), ("a2", "a"), ("b1", "b"), ("c1", "c"), ("b2", "b")]
    threads = []
    for name, who in waiters:
        thread = threading.Thread(target=wait, args=(name, who))
        thread.start()
        threads.append(thread)
        time.sleep(0.05)
    gone = threading.Event()
    leaving = threading.Thread(target=lambda: order.append(str(lock.acquire("d", gone))))
    leaving.start()
    time.sleep(0.05)
    gone.set()  # d's client went away while waiting: d leaves the line
    leaving.join(timeout=5)
    lock.release()
    for thread in threads:
        thread.join(timeout=5)
    assert order == ["False", "b1", "a1", "c1", "b2", "a2"], order
    assert lock.waiting() == 0
