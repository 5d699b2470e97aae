"""Deployments on the tiny model over the real inference process, the whole loop through the official ``openai``
client and the JSON API: a stable name serves the base model, its traffic is kept, corrected and made a dataset,
an adapter is trained on it, and the name moves to the adapter only when its gate — a real evaluation — passes,
answers with the new adapter at once, rolls back, and no request sent throughout fails. A failing gate
refuses the promotion and says which numbers failed; an administrator's override is recorded with its reason.
Another user can neither see nor call nor move it."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from typing import Any

import openai
import pytest

from tests.conftest import csrf_of, inference_process, login
from worker import lifecycle

pytestmark = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)


@pytest.fixture
def inference(configure: Any, env: Any, tmp_path: Any) -> Iterator[dict[str, Any]]:
    with inference_process(configure, tmp_path) as running:
        yield running


def _train(client: Any, setup: dict[str, Any], name: str, learning_rate: float, steps: int = 6) -> str:
    spec = {"max_steps": steps, "batch_size": 4, "eval_steps": 0, "max_seq_length": 64, "learning_rate": learning_rate}
    body = {"name": name, "model_id": setup["model"], "dataset_version_id": setup["version"], "spec": spec}
    job = client.post("/api/v1/jobs", json=body).json()
    lifecycle.execute(job["run"]["id"])  # (the evaluation it queues is not run: the gate makes its own)
    return str(job["id"])


def _gate(setup: dict[str, Any], **rule: Any) -> dict[str, Any]:
    return {"dataset_version_id": setup["version"], "metric": "rouge_l", "sample_size": 3, **rule}


def test_promote_through_the_gate_serve_and_roll_back(
    client: Any, setup: dict[str, Any], inference: dict[str, Any], configure: Any
) -> None:
    configure(store_deployment_traffic=True)  # the install keeps what its deployments answer
    key = client.post("/api/v1/keys", json={"name": "app"}).json()["key"]
    ai = openai.OpenAI(base_url="http://testserver/v1", api_key=key, http_client=client, max_retries=0)
    base = f"base-{setup['model']}"
    made = client.post(
        "/api/v1/deployments",
        json={"name": "support-bot", "model": base, "gate": _gate(setup, margin=1.0, probe_margin=10)},
    )
    assert made.status_code == 201, made.text
    deployment = made.json()
    assert deployment["model"] == base and [h["action"] for h in deployment["history"]] == ["created"]
    assert "support-bot" in [m.id for m in ai.models.list().data]

    def ask(model: str, question: str = "Add 3 and 3.") -> str:
        answer = ai.chat.completions.create(
            model=model, messages=[{"role": "user", "content": question}], max_tokens=8, temperature=0
        )
        return str(answer.choices[0].message.content)

    # the loop: the deployment's traffic is kept, corrected on Traffic, made a dataset, and trained on
    for n in range(8):
        ask("support-bot", f"Add {n} and {n}.")
    served = client.get("/api/v1/traffic", params={"model": "support-bot"}).json()
    assert len(served) == 8
    for row in served:
        question = row["messages"][-1]["content"]
        n = int(question.split()[1])
        client.put(f"/api/v1/traffic/{row['completion']['id']}", json={"correction": f"{2 * n}"})
    made_dataset = client.post("/api/v1/traffic/datasets", json={"model": "support-bot", "name": "corrected"})
    assert made_dataset.status_code == 201 and made_dataset.json()["records"] == 8
    corrected = client.get(f"/api/v1/datasets/{made_dataset.json()['dataset_id']}").json()
    lifecycle.execute(corrected["validation_run"]["id"])
    version = client.get(f"/api/v1/datasets/{corrected['id']}").json()["versions"][0]["id"]
    tuned = _train(client, {**setup, "version": version}, "from traffic", 0.01)
    base_answer, tuned_answer = ask(base), ask(f"job-{tuned}")
    assert base_answer != tuned_answer  # so that which model answered shows
    assert ask("support-bot") == base_answer

    # requests keep coming while the deployment moves; none may fail
    failures: list[str] = []
    answered = [0]
    stop = threading.Event()

    def traffic() -> None:
        while not stop.is_set():
            try:
                ask("support-bot")
                answered[0] += 1
            except Exception as exc:
                failures.append(repr(exc))

    sender = threading.Thread(target=traffic, daemon=True)
    sender.start()
    try:
        promoting = client.post(f"/api/v1/deployments/{deployment['id']}/promote", json={"model": f"job-{tuned}"})
        assert promoting.status_code == 202, promoting.text
        [promotion] = promoting.json()["promotions"]
        assert promotion["status"] == "running" and len(promotion["evaluations"]) == 1  # the base: one evaluation
        assert ask("support-bot") == base_answer  # not switched before the gate has spoken
        gate_run = client.get(f"/api/v1/evaluations/{promotion['evaluations'][0]}").json()["run"]["id"]
        lifecycle.execute(gate_run)
        assert ask("support-bot") == tuned_answer  # the same name, the new adapter, as soon as the gate passed
        after = client.get(f"/api/v1/deployments/{deployment['id']}").json()
        assert after["model"] == f"job-{tuned}" and after["promotions"][0]["status"] == "passed"
        numbers = after["history"][0]["numbers"]
        assert after["history"][0]["action"] == "promoted" and numbers["passed"] and numbers["metric"] == "rouge_l"

        rolled = client.post(f"/api/v1/deployments/{deployment['id']}/rollback", json={"model": base})
        assert rolled.status_code == 200 and rolled.json()["model"] == base
        assert ask("support-bot") == base_answer
        assert [h["action"] for h in rolled.json()["history"]] == ["rolled_back", "promoted", "created"]
        refused = client.post(f"/api/v1/deployments/{deployment['id']}/rollback", json={"model": base})
        assert refused.status_code == 422  # it serves that already
    finally:
        stop.set()
        sender.join(timeout=120)
    assert not failures and answered[0] >= 3, (failures, answered)
    kept = [c.model for c in ai.chat.completions.list(limit=100)]  # every answer the deployment gave, and no other
    assert kept and set(kept) == {"support-bot"} and len(kept) == answered[0] + 4 + 8

    # the page shows it; the playground offers it
    page = client.get(f"/deployments/{deployment['id']}").text
    assert "support-bot" in page and "Rolled back" in page and "Promoted by the gate" in page
    assert f'value="deployment-{deployment["id"]}"' in client.get("/playground").text
    assert "Served earlier by the deployment" in client.get(f"/adapters/{tuned}").text  # the adapter's lineage

    # another user: the deployment does not exist for them, by any route or through /v1
    client.post("/api/v1/users", json={"email": "bob@example.com", "password": "bob-password-1"})
    client.post("/logout", data={"csrf_token": client.headers["X-CSRF-Token"]})
    del client.headers["X-CSRF-Token"]
    login(client, "bob@example.com", "bob-password-1")
    client.headers["X-CSRF-Token"] = csrf_of(client, "/models")
    bob_key = client.post("/api/v1/keys", json={"name": "bob"}).json()["key"]
    bob = openai.OpenAI(base_url="http://testserver/v1", api_key=bob_key, http_client=client, max_retries=0)
    with pytest.raises(openai.NotFoundError):
        bob.chat.completions.create(model="support-bot", messages=[{"role": "user", "content": "Hi"}])
    assert client.get(f"/api/v1/deployments/{deployment['id']}").status_code == 404
    assert client.post(f"/api/v1/deployments/{deployment['id']}/rollback", json={"model": base}).status_code == 404
    assert client.get("/api/v1/deployments").json() == []
    anonymous = openai.OpenAI(base_url="http://testserver/v1", api_key="not-a-key", http_client=client, max_retries=0)
    client.cookies.clear()
    with pytest.raises(openai.AuthenticationError):  # a deployment's requests need a key
        anonymous.chat.completions.create(model="support-bot", messages=[{"role": "user", "content": "Hi"}])


def test_a_failing_gate_refuses_and_says_which_numbers(client: Any, setup: dict[str, Any]) -> None:
    from app.db.models import Evaluation, Run, RunStatus
    from app.db.session import session_scope
    from app.deployments.service import settle

    served, candidate = (
        _train(client, setup, "served", 0.01, steps=1),
        _train(client, setup, "candidate", 0.01, steps=1),
    )
    deployment = client.post(
        "/api/v1/deployments",
        json={"name": "bot", "model": f"job-{served}", "gate": _gate(setup, margin=0.02, probe_margin=0.1)},
    ).json()
    promoting = client.post(f"/api/v1/deployments/{deployment['id']}/promote", json={"model": f"job-{candidate}"})
    [promotion] = promoting.json()["promotions"]
    assert len(promotion["evaluations"]) == 2  # the candidate's and the served adapter's
    # the two evaluations end with the candidate a little worse on the metric and forgetting more
    summaries = {
        promotion["evaluations"][0]: {"scores": {"tuned": {"rouge_l": 0.40}}, "probe": {"loss": {"tuned": 2.5}}},
        promotion["evaluations"][1]: {"scores": {"tuned": {"rouge_l": 0.45}}, "probe": {"loss": {"tuned": 2.2}}},
    }
    with session_scope() as session:
        for evaluation_id, summary in summaries.items():
            evaluation = session.get(Evaluation, uuid.UUID(evaluation_id))
            assert evaluation is not None
            evaluation.summary = summary
            run = session.get(Run, evaluation.run_id)
            assert run is not None
            run.status = RunStatus.succeeded
        session.flush()
        settle(session, evaluation)
    after = client.get(f"/api/v1/deployments/{deployment['id']}").json()
    assert after["model"] == f"job-{served}"  # not moved
    assert after["promotions"][0]["status"] == "failed"
    reason = after["promotions"][0]["reason"]
    assert "rouge_l: 0.400 against 0.450" in reason and "forgetting: probe loss 2.500 against 2.200" in reason
    assert after["history"][0]["action"] == "refused" and after["history"][0]["numbers"]["failed"] == [
        "rouge_l",
        "forgetting",
    ]
    assert "rouge_l: 0.400 against 0.450" in client.get(f"/deployments/{deployment['id']}").text

    # an administrator may move it anyway, and the reason is kept
    forced = client.post(
        f"/api/v1/deployments/{deployment['id']}/promote",
        json={"model": f"job-{candidate}", "override_reason": "hotfix for the outage"},
    )
    assert forced.status_code == 200 and forced.json()["model"] == f"job-{candidate}"
    assert forced.json()["history"][0] == {
        **forced.json()["history"][0],
        "action": "overridden",
        "reason": "hotfix for the outage",
    }
    # names that would shadow a model, or malformed, are refused
    for name in ("job-x", "Bad Name", "bot"):
        taken = client.post("/api/v1/deployments", json={"name": name, "model": f"job-{served}", "gate": _gate(setup)})
        assert taken.status_code in (409, 422), (name, taken.text)
