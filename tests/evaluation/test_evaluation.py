"""An evaluation end to end on the tiny model: it starts by itself when a job succeeds, runs as a real child,
stores its report; the report page draws the scores and shows samples; evaluate again; compare; 404s."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import csrf_of, login, make_admin
from tests.evaluation.fake_judge import FakeJudge
from worker import lifecycle


@pytest.fixture
def trained(client: Any, tiny_model_dir: Path, tmp_path: Path) -> dict[str, Any]:
    make_admin(client)
    client.headers["X-CSRF-Token"] = csrf_of(client, "/models")
    model = client.post("/api/v1/models/local", json={"name": "tiny", "path": str(tiny_model_dir)}).json()
    lifecycle.execute(model["import_run"]["id"])
    rows = []
    for i in range(60):  # every prompt twice (with different answers): test prompts also appear in train
        for answer in (f"{2 * i}", f"It is {2 * i}."):
            question = {"role": "user", "content": f"Add {i} and {i}."}
            rows.append({"messages": [question, {"role": "assistant", "content": answer}]})
    path = tmp_path / "sums.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    with path.open("rb") as handle:
        dataset = client.post("/api/v1/datasets", files={"file": ("sums.jsonl", handle)}).json()
    lifecycle.execute(dataset["validation_run"]["id"])
    version = client.get(f"/api/v1/datasets/{dataset['id']}").json()["versions"][0]
    assert version["split_counts"]["test"] >= 3
    spec = {"max_steps": 3, "batch_size": 4, "eval_steps": 0, "max_seq_length": 64, "learning_rate": 5e-3}
    job = client.post(
        "/api/v1/jobs", json={"model_id": model["id"], "dataset_version_id": version["id"], "spec": spec}
    ).json()
    lifecycle.execute(job["run"]["id"])
    assert client.get(f"/api/v1/jobs/{job['id']}").json()["status"] == "succeeded"
    return {"job": job, "version": version}


# generation-bound; evaluations' SQL runs on both in the other tests here
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_evaluation_runs_after_training_and_reports(
    client: Any, trained: dict[str, Any], loopback_judges: None
) -> None:
    job = trained["job"]
    evaluations = client.get("/api/v1/evaluations").json()
    assert len(evaluations) == 1 and evaluations[0]["job_id"] == job["id"]  # started by itself
    first = evaluations[0]
    assert first["run"]["status"] == "queued" and first["summary"] is None
    page = client.get(f"/evaluations/{first['id']}")
    assert page.status_code == 200 and 'id="evaluation-live"' in page.text
    lifecycle.execute(first["run"]["id"])
    report = client.get(f"/api/v1/evaluations/{first['id']}").json()
    assert report["run"]["status"] == "succeeded", report["run"]
    summary = report["summary"]
    assert summary["loss"]["base"] > 0 and summary["loss"]["tuned"] > 0
    assert summary["perplexity"]["base"] == pytest.approx(2.718281828 ** summary["loss"]["base"], rel=1e-6)
    assert set(summary["scores"]) == {"base", "few_shot", "tuned"}
    for scores in summary["scores"].values():
        assert set(scores) == {"exact_match", "f1", "bleu", "rouge_l"}
        assert all(0.0 <= v <= 1.0 for v in scores.values())
    assert summary["few_shot_examples"] == 3 and summary["sample_size"] == summary["test_records"]
    assert summary["probe"]["records"] == 6 and summary["probe"]["loss"]["base"] > 0
    assert summary["contamination"]["count"] >= 1  # every test prompt has a twin in train
    assert report["verdict"]

    samples = client.get(f"/api/v1/evaluations/{first['id']}/samples").json()
    assert len(samples) == summary["sample_size"]
    assert all({"base", "few_shot", "tuned", "reference", "prompt"} <= set(s) for s in samples)
    diffs = [s["diff"] for s in samples]
    assert diffs == sorted(diffs, reverse=True)
    worst_first = [s["diff"] for s in client.get(f"/api/v1/evaluations/{first['id']}/samples?sort=-diff").json()]
    assert worst_first == sorted(diffs)

    page = client.get(f"/evaluations/{first['id']}")
    assert page.status_code == 200
    assert page.text.count("<rect") >= 12 and 'data-variant="few_shot"' in page.text  # 4 metrics × 3 models
    assert 'id="contamination"' in page.text and 'id="loss-table"' in page.text
    assert client.get(f"/jobs/{job['id']}").text.count("/evaluations/") >= 1

    with FakeJudge(prefer="sorted") as fake:
        judge = {"name": "fake judge", "url": fake.url, "model": "judge-1", "api_key": "sk-judge", "timeout_s": 5}
        judge_id = client.post("/api/v1/judges", json=judge).json()["id"]
        judge_first_evaluation(client, first["id"], judge_id, samples)

        # evaluate again on the validation split with fewer prompts and a judge, through the page's form
        again = client.post(
            f"/jobs/{job['id']}/evaluations",
            data={
                "dataset_version_id": trained["version"]["id"],
                "split": "validation",
                "sample_size": "2",
                "judge_id": judge_id,
            },
            follow_redirects=False,
        )
        assert again.status_code == 303
        second_id = again.headers["location"].rsplit("/", 1)[1]
        second = client.get(f"/api/v1/evaluations/{second_id}").json()
        assert second["options"]["split"] == "validation" and second["options"]["sample_size"] == 2
        lifecycle.execute(second["run"]["id"])
        assert client.get(f"/api/v1/evaluations/{second_id}").json()["summary"]["sample_size"] == 2
        [auto] = client.get(f"/api/v1/evaluations/{second_id}/judgements").json()  # started by itself
        lifecycle.execute(auto["run"]["id"])
        assert client.get(f"/api/v1/evaluations/{second_id}/judgements").json()[0]["summary"]["samples"] == 2
    assert set(fake.seen_keys) == {"Bearer sk-judge"}
    compared = client.get(f"/evaluations/compare?id={first['id']}&id={second_id}")
    assert compared.status_code == 200 and 'data-row="tuned-rouge_l"' in compared.text
    assert client.get(f"/evaluations/compare?id={first['id']}").status_code == 422
    bad = client.post(f"/jobs/{job['id']}/evaluations", data={"sample_size": "0"})
    assert bad.status_code == 422

    # another user sees none of it
    client.post("/api/v1/users", json={"email": "eve@example.com", "password": "eve-password-1"})
    client.post("/logout", data={"csrf_token": client.headers.pop("X-CSRF-Token")})
    login(client, "eve@example.com", "eve-password-1")
    client.headers["X-CSRF-Token"] = csrf_of(client, "/models")
    for method, url in [
        ("get", f"/evaluations/{first['id']}"),
        ("get", f"/evaluations/{first['id']}/_live"),
        ("get", f"/api/v1/evaluations/{first['id']}"),
        ("get", f"/api/v1/evaluations/{first['id']}/samples"),
        ("get", f"/evaluations/compare?id={first['id']}&id={second_id}"),
        ("post", f"/jobs/{job['id']}/evaluations"),
        ("post", f"/api/v1/jobs/{job['id']}/evaluations"),
        ("get", f"/api/v1/evaluations/{first['id']}/judgements"),
        ("post", f"/api/v1/evaluations/{first['id']}/judgements"),
        ("get", f"/api/v1/evaluations/{first['id']}/labels"),
        ("get", f"/evaluations/{first['id']}/_judging"),
        ("post", f"/evaluations/{first['id']}/judgements"),
        ("post", f"/evaluations/{first['id']}/labels"),
        ("get", "/settings/judges"),
    ]:
        kwargs = {"json": {"judge_id": judge_id}} if url.startswith("/api") and method == "post" else {}
        assert getattr(client, method)(url, **kwargs).status_code == 404, url
    assert client.get("/api/v1/evaluations").json() == []
    assert client.put(f"/api/v1/evaluations/{first['id']}/labels/x", json={"choice": "tie"}).status_code == 404
    assert client.post("/api/v1/judges", json=judge).status_code == 403
    assert client.get(f"/evaluations/{uuid.uuid4()}").status_code == 404


def test_a_job_that_has_not_succeeded_cannot_be_evaluated(client: Any, setup: dict[str, Any]) -> None:
    spec = {"max_steps": 2, "max_seq_length": 64}
    body = {"model_id": setup["model"], "dataset_version_id": setup["version"], "spec": spec}
    queued = client.post("/api/v1/jobs", json=body).json()
    refused = client.post(f"/api/v1/jobs/{queued['id']}/evaluations", json={})
    assert refused.status_code == 422 and "succeeded" in refused.json()["error"]["message"]


def judge_first_evaluation(client: Any, evaluation_id: str, judge_id: str, samples: list[dict[str, Any]]) -> None:
    """The fake judge prefers the answer that sorts first, whatever its place: the verdicts are known."""
    started = client.post(f"/api/v1/evaluations/{evaluation_id}/judgements", json={"judge_id": judge_id})
    assert started.status_code == 201, started.text
    assert 'id="judging" hx-get=' in client.get(f"/evaluations/{evaluation_id}").text  # live while it runs
    lifecycle.execute(started.json()["run"]["id"])
    [judged] = client.get(f"/api/v1/evaluations/{evaluation_id}/judgements").json()
    assert judged["run"]["status"] == "succeeded", judged["run"]
    expected = {
        s["id"]: "tie"
        if s["base"]["output"] == s["tuned"]["output"]
        else min(("base", "tuned"), key=lambda v: s[v]["output"])
        for s in samples
    }
    verdicts = client.get(f"/api/v1/evaluations/{evaluation_id}/judgements/{judged['id']}/verdicts").json()
    assert {v["id"]: v["pairwise"]["winner"] for v in verdicts} == expected
    summary = judged["summary"]
    assert summary["samples"] == summary["judged"] == len(samples)
    assert summary["outcomes"]["tuned"] == list(expected.values()).count("tuned")
    assert summary["errors"] == {"malformed": 0, "timeout": 0, "http": 0, "unreachable": 0}
    assert judged["agreement"] == {"labelled": 0, "compared": 0, "agreed": 0, "rate": None}

    # label two samples: one as the judge did, one against it
    first, second = samples[0]["id"], samples[1]["id"]
    other = {"base": "tuned", "tuned": "base", "tie": "base"}[expected[second]]
    url = f"/api/v1/evaluations/{evaluation_id}/labels"
    assert client.put(f"{url}/{first}", json={"choice": expected[first]}).status_code == 200
    picked = client.post(
        f"/evaluations/{evaluation_id}/labels",
        data={"sample_id": second, "choice": other},
        headers={"HX-Request": "true"},
    )
    assert picked.status_code == 200 and f'value="{other}" aria-pressed="true"' in picked.text
    assert client.get(url).json() == {first: expected[first], second: other}
    assert client.put(f"{url}/{first}", json={"choice": "maybe"}).status_code == 422
    assert client.put(f"{url}/no-such-sample", json={"choice": "tie"}).status_code == 404
    agreement = client.get(f"/api/v1/evaluations/{evaluation_id}/judgements").json()[0]["agreement"]
    assert agreement == {"labelled": 2, "compared": 2, "agreed": 1, "rate": 0.5}
    page = client.get(f"/evaluations/{evaluation_id}").text
    assert 'data-agreement="1/2"' in page and 'data-outcome="' in page and 'data-criterion="accuracy"' in page
    assert page.count('class="judge-verdict') >= len(samples)
    assert 'id="judging" hx-get=' not in page  # nothing left running


def test_judges_are_set_up_by_administrators(client: Any, setup: dict[str, Any]) -> None:
    endpoint = {"name": "gpt", "url": "https://judge.example/v1", "model": "gpt-x", "api_key": "sk-secret"}
    created = client.post("/api/v1/judges", json=endpoint)
    assert created.status_code == 201 and created.json()["has_key"] is True
    assert "sk-secret" not in created.text and "sk-secret" not in client.get("/settings/judges").text
    assert client.post("/api/v1/judges", json=endpoint).status_code == 409
    for bad, field in [
        ({"name": "x", "url": "ftp://host", "model": "m"}, "url"),
        ({"name": "x", "url": "http://host/v1"}, "model"),
        ({"name": "x", "kind": "local"}, "base_model_id"),
    ]:
        refused = client.post("/api/v1/judges", json=bad)
        assert refused.status_code == 422 and refused.json()["error"]["field"] == field, refused.text
    local = client.post("/api/v1/judges", json={"name": "local", "kind": "local", "base_model_id": setup["model"]})
    assert local.status_code == 201 and local.json()["model"] == f"base-{setup['model']}"

    # the settings page: a form that shows its error and keeps the values, then a removal
    form = {
        "name": "again",
        "kind": "endpoint",
        "url": "not a url",
        "model": "m",
        "csrf_token": client.headers["X-CSRF-Token"],
    }
    page = client.post("/settings/judges", data=form)
    assert page.status_code == 422 and "http://" in page.text and 'value="again"' in page.text
    added = client.post("/settings/judges", data={**form, "url": "https://judge2.example/v1"}, follow_redirects=False)
    assert added.status_code == 303
    listed = {j["name"]: j for j in client.get("/api/v1/judges").json()}
    assert set(listed) == {"gpt", "local", "again"}
    assert 'data-judge="again"' in client.get("/settings/judges").text
    removed = client.post(f"/settings/judges/{listed['again']['id']}/delete", follow_redirects=False)
    assert removed.status_code == 303
    assert client.delete(f"/api/v1/judges/{listed['gpt']['id']}").status_code == 204
    assert [j["name"] for j in client.get("/api/v1/judges").json()] == ["local"]
