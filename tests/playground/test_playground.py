"""The playground over the real inference process on the tiny model: answers stream token by token, the
adapter is hot-swapped on a base model loaded once, feedback becomes a preference dataset, and nothing of
another user's can be chatted with."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import csrf_of, free_port, inference_process, login
from worker import lifecycle


@pytest.fixture
def inference(configure: Any, env: Any, tmp_path: Any) -> Iterator[dict[str, Any]]:
    """Refinery's inference process on a free loopback port, sharing the test's database and data dir."""
    with inference_process(configure, tmp_path) as running:
        yield running


def _train(client: Any, setup: dict[str, Any]) -> dict[str, Any]:
    spec = {"max_steps": 6, "batch_size": 4, "eval_steps": 0, "save_steps": 3, "max_seq_length": 64}
    body = {"name": "sums", "model_id": setup["model"], "dataset_version_id": setup["version"], "spec": spec}
    job = client.post("/api/v1/jobs", json={**body, "spec": {**spec, "learning_rate": 0.01}}).json()
    lifecycle.execute(job["run"]["id"])
    assert client.get(f"/api/v1/jobs/{job['id']}").json()["status"] == "succeeded"
    return dict(job)


@dataclass
class Streamed:
    """The page's stream: the answer's text, then (after an ASCII record separator) how it ended."""

    status_code: int
    text: str
    finish_reason: str | None


def _chat(client: Any, model: str, text: str = "Add 3 and 3.") -> Streamed:
    body = {"model": model, "messages": [{"role": "user", "content": text}], "temperature": 0, "max_tokens": 12}
    response = client.post("/playground/stream", json=body)
    answer, _mark, ending = response.text.partition("\x1e")
    finish = json.loads(ending)["finish_reason"] if ending else None
    return Streamed(response.status_code, answer, finish)


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)  # the database paths are covered on both elsewhere
def test_stream_swap_adapters_and_feedback_to_preferences(
    client: Any, setup: dict[str, Any], inference: dict[str, Any]
) -> None:
    job = _train(client, setup)
    base, tuned = f"base-{setup['model']}", f"job-{job['id']}"
    page = client.get("/playground")
    assert page.status_code == 200
    assert f'value="{base}"' in page.text and f'value="{tuned}"' in page.text
    assert f'value="{tuned}@checkpoint-3"' in page.text  # checkpoints are chat-able too

    # streaming straight from the inference process: several chunks, OpenAI's shape
    url = f"{inference['url']}/v1/chat/completions"
    # a side-by-side chat's two first requests arrive together (they once raced in transformers' lazy imports)
    from concurrent.futures import ThreadPoolExecutor

    def ask(model: str) -> int:
        body = {"model": model, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4}
        auth = {"Authorization": f"Bearer {inference['key']}"}
        return httpx.post(url, json=body, headers=auth, timeout=120).status_code

    with ThreadPoolExecutor(2) as pool:
        assert list(pool.map(ask, [base, tuned])) == [200, 200]
    question = [{"role": "user", "content": "Add 2 and 2."}]
    body = {"model": base, "messages": question, "max_tokens": 8, "temperature": 0, "stream": True}
    body["stream_options"] = {"include_usage": True}
    headers = {"Authorization": f"Bearer {inference['key']}"}
    with httpx.stream("POST", url, json=body, headers=headers, timeout=60) as response:
        events = [line for line in response.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "data: [DONE]"
    chunks = [json.loads(e[6:]) for e in events[:-1]]
    # the last chunk carries the token counts and no choice; the one before it the finish reason
    counted = chunks[-1]["usage"]
    assert (
        chunks[-1]["choices"] == []
        and counted["total_tokens"] == counted["prompt_tokens"] + counted["completion_tokens"]
    )
    assert 1 <= counted["completion_tokens"] <= 8 and counted["prompt_tokens"] > 5
    finish = chunks[-2]["choices"][0]["finish_reason"]
    assert chunks[0]["object"] == "chat.completion.chunk" and finish == (
        "length" if counted["completion_tokens"] == 8 else "stop"
    )
    assert sum(1 for c in chunks[:-1] if c["choices"][0]["delta"].get("content")) >= 2
    assert httpx.post(url, json=body, timeout=10).status_code == 401  # the inference key is required

    # through the web app: base and tuned answer differently; the base weights were loaded once
    base_answer, tuned_answer = _chat(client, base), _chat(client, tuned)
    assert base_answer.status_code == tuned_answer.status_code == 200
    assert base_answer.text and base_answer.text != tuned_answer.text  # (the tuned model may just stop: "<|im_end|>")
    assert _chat(client, base).text == base_answer.text  # greedy: the adapter was switched off again
    health = httpx.get(f"{inference['url']}/healthz", timeout=5).json()
    assert health["loads"] == 1 and health["paired"] == 0

    # side by side: the two requests of one comparison share a pair id and are generated as one batch (the
    # base row and the adapter row of PEFT's mixed batch), each answer the same as when asked alone; one of
    # them streamed, the other whole
    def paired(model: str, stream: bool) -> str:
        body = {"model": model, "messages": [{"role": "user", "content": "Add 3 and 3."}], "max_tokens": 12}
        body |= {"temperature": 0, "stream": stream, "pair": "cmp-1", "user": "someone"}
        auth = {"Authorization": f"Bearer {inference['key']}"}
        if not stream:
            return str(httpx.post(url, json=body, headers=auth, timeout=120).json()["choices"][0]["message"]["content"])
        with httpx.stream("POST", url, json=body, headers=auth, timeout=120) as response:
            chunks = [json.loads(line[6:]) for line in response.iter_lines() if line.startswith("data: {")]
        return "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])

    with ThreadPoolExecutor(2) as pool:
        together = list(pool.map(paired, [base, tuned], [True, False]))
    assert together == [base_answer.text, tuned_answer.text]
    health = httpx.get(f"{inference['url']}/healthz", timeout=5).json()
    assert health["paired"] == 1 and health["loads"] == 1
    # the page sends its pair id through the web app
    from app.playground.service import PAIR_ID

    assert PAIR_ID.fullmatch("p1x2y3") and not PAIR_ID.fullmatch("a b")

    # the same through the OpenAI-compatible API with the official package, whole and streamed
    secret = client.post("/api/v1/keys", json={"name": "openai"}).json()["key"]
    ai = openai.OpenAI(base_url="http://testserver/v1", api_key=secret, http_client=client, max_retries=0)
    question = [{"role": "user", "content": "Add 3 and 3."}]
    whole = ai.chat.completions.create(model=tuned, messages=question, max_tokens=12, temperature=0)
    assert whole.object == "chat.completion" and whole.choices[0].message.content == tuned_answer.text
    assert whole.usage is not None and 1 <= whole.usage.completion_tokens <= 12
    assert whole.choices[0].finish_reason == ("length" if whole.usage.completion_tokens == 12 else "stop")
    assert tuned_answer.finish_reason == whole.choices[0].finish_reason  # the page says how the answer ended
    streamed = ai.chat.completions.create(
        model=tuned,
        messages=question,
        max_tokens=12,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(streamed)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == tuned_answer.text
    assert chunks[-1].usage == whole.usage and chunks[-2].choices[0].finish_reason == whole.choices[0].finish_reason
    with pytest.raises(openai.NotFoundError) as unknown:
        ai.chat.completions.create(model=f"job-{uuid.uuid4()}", messages=question)
    assert unknown.value.code == "model_not_found"

    # feedback: a pairwise pick, and a thumbs up and down on two answers to the same prompt
    prompt = [{"role": "user", "content": "Add 3 and 3."}]

    def feedback(**body: Any) -> Any:
        return client.post("/playground/feedback", json={"prompt": prompt, **body})

    assert feedback(model_a=base, answer_a="five", model_b=tuned, answer_b="6", choice="b").status_code == 201
    assert feedback(model_a=tuned, answer_a="It is 6.", choice="up").status_code == 201
    assert feedback(model_a=base, answer_a="It is 7.", choice="down").status_code == 201
    assert feedback(model_a=tuned, answer_a="x", choice="maybe").status_code == 422
    made = client.post("/playground/preferences", data={"name": "from the playground"}, follow_redirects=False)
    assert made.status_code == 303
    dataset_id = made.headers["location"].rsplit("/", 1)[1]
    dataset = client.get(f"/api/v1/datasets/{dataset_id}").json()
    lifecycle.execute(dataset["validation_run"]["id"])
    version = client.get(f"/api/v1/datasets/{dataset_id}").json()["versions"][0]
    assert version["kind_counts"] == {"preference": 2}
    rows = client.get(f"/api/v1/datasets/{dataset_id}/versions/{version['id']}/records").json()["records"]
    pairs = {(r["data"]["chosen"][-1]["content"], r["data"]["rejected"][-1]["content"]) for r in rows}
    assert pairs == {("6", "five"), ("It is 6.", "It is 7.")}
    again = client.post("/playground/preferences", data={})
    assert again.status_code == 422  # each choice is used once

    # a local judge: the base model, asked through the same inference process with the install's key
    [evaluation] = client.get("/api/v1/evaluations").json()  # started by itself after training
    lifecycle.execute(evaluation["run"]["id"])
    local = {"name": "tiny judge", "kind": "local", "base_model_id": setup["model"], "timeout_s": 120}
    judge = client.post("/api/v1/judges", json=local).json()
    started = client.post(f"/api/v1/evaluations/{evaluation['id']}/judgements", json={"judge_id": judge["id"]})
    lifecycle.execute(started.json()["run"]["id"])
    [judged] = client.get(f"/api/v1/evaluations/{evaluation['id']}/judgements").json()
    assert judged["run"]["status"] == "succeeded", judged["run"]
    summary = judged["summary"]
    # every call was answered; a random tiny model writes no JSON verdict, so none counts for either side
    assert summary["samples"] >= 1 and summary["judged"] == 0
    assert summary["errors"] == {"malformed": 4 * summary["samples"], "timeout": 0, "http": 0, "unreachable": 0}

    # the same local model as a distillation teacher: it answers the preference version's prompts, which arrive on
    # Traffic as its stored completions
    body = {"judge_id": judge["id"], "dataset_version_id": version["id"], "max_tokens": 8}
    distilling = client.post("/api/v1/traffic/distillations", json=body)
    assert distilling.status_code == 202, distilling.text
    lifecycle.execute(distilling.json()["id"])
    taught = client.get(f"/api/v1/runs/{distilling.json()['id']}").json()
    assert taught["status"] == "succeeded", taught
    assert taught["result"]["answers"] == 2 and taught["result"]["failures"] == {}
    assert taught["result"]["tokens"]["prompt_tokens"] > 0 and taught["result"]["tokens"]["completion_tokens"] > 0
    stored = client.get("/api/v1/traffic", params={"model": "teacher:tiny judge"}).json()
    assert len(stored) == 2 and all(a["completion"]["choices"][0]["message"]["content"] for a in stored)

    # an eval run on a completions source: each item's prompt answered by the base and by the tuned model
    # through the same inference process, then graded (client.evals end to end)
    made = ai.evals.create(
        name="sums",
        data_source_config={"type": "custom", "item_schema": {"type": "object"}},
        testing_criteria=[
            {
                "type": "python",
                "name": "answered",
                "source": "def grade(sample, item):\n    return 1.0 if sample['output_text'].strip() else 0.0\n",
            },
            {
                "type": "string_check",
                "name": "says the sum",
                "input": "{{ sample.output_text }}",
                "reference": "{{ item.sum }}",
                "operation": "like",
            },
        ],
    )
    items = [{"item": {"a": a, "b": b, "sum": str(a + b)}} for a, b in ((2, 2), (3, 4), (1, 5))]
    answers = {}
    for model, kind in ((base, "completions"), (tuned, "responses")):  # OpenAI's two sampling sources
        run = ai.evals.runs.create(
            made.id,
            data_source={  # type: ignore[misc]
                "type": kind,
                "model": model,
                "source": {"type": "file_content", "content": items},
                "input_messages": {
                    "type": "template",
                    "template": [{"role": "user", "content": "Add {{ item.a }} and {{ item.b }}."}],
                },
                "sampling_params": {"temperature": 0, "max_completion_tokens": 6, "seed": 1},
            },
        )
        assert run.model == model and run.status == "queued" and run.data_source.type == kind
        from app.db.models import EvalRun
        from app.db.session import get_sessionmaker

        with get_sessionmaker()() as session:
            row = session.get(EvalRun, uuid.UUID(run.id.removeprefix("evalrun_")))
            assert row is not None
            lifecycle.execute(str(row.run_id))
        done = ai.evals.runs.retrieve(run.id, eval_id=made.id)
        assert done.status == "completed" and done.result_counts.total == 3 and done.result_counts.errored == 0
        graded = list(ai.evals.runs.output_items.list(run.id, eval_id=made.id))
        first = graded[0].sample
        assert first.model == model and first.input[0].content == "Add 2 and 2." and first.max_completion_tokens == 6
        assert 1 <= first.usage.completion_tokens <= 6 and first.finish_reason in ("stop", "length")
        answers[model] = [g.sample.output[0].content if g.sample.output else "" for g in graded]
        # greedy: the answer is the one the chat API gives to the same prompt
        same = ai.chat.completions.create(
            model=model, messages=[{"role": "user", "content": "Add 2 and 2."}], max_tokens=6, temperature=0
        )
        assert answers[model][0] == same.choices[0].message.content
    assert answers[base] != answers[tuned]
    with pytest.raises(openai.NotFoundError) as missing:
        ai.evals.runs.create(
            made.id,
            data_source={  # type: ignore[typeddict-item]
                "type": "completions",
                "model": f"job-{uuid.uuid4()}",
                "source": {"type": "file_content", "content": items},
                "input_messages": {"type": "item_reference", "item_reference": "item.messages"},
            },
        )
    assert missing.value.param == "data_source.model"

    # another user can chat with the shared base model but not with this job's adapter
    client.post("/api/v1/users", json={"email": "eve@example.com", "password": "eve-password-1"})
    client.post("/logout", data={"csrf_token": client.headers.pop("X-CSRF-Token")})
    login(client, "eve@example.com", "eve-password-1")
    client.headers["X-CSRF-Token"] = csrf_of(client, "/models")
    assert _chat(client, tuned).status_code == 404
    assert _chat(client, f"{tuned}@checkpoint-3").status_code == 404
    assert feedback(model_a=tuned, answer_a="x", choice="up").status_code == 404
    assert f'value="{tuned}"' not in client.get("/playground").text


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_inference_down_is_a_clear_error(client: Any, setup: dict[str, Any], configure: Any) -> None:
    configure(inference_port=free_port())  # nothing listens there
    response = _chat(client, f"base-{setup['model']}")
    assert response.status_code == 503 and "refinery inference" in json.loads(response.text)["error"]["message"]
