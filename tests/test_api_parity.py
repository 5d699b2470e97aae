"""The JSON API covers what the pages do: every state-changing page route names its /api/v1 (or /v1)
counterpart here, and a new page route without one fails this test. The counterparts added for the pages'
last gaps (estimate, compare, playground feedback) are exercised."""

from __future__ import annotations

from typing import Any

import pytest

from worker import lifecycle

# page route → the API operation that does the same ("" only for what is about a browser session itself)
COUNTERPART = {
    "POST /setup": "POST /api/v1/users",
    "POST /login": "",  # a browser session; the API authenticates each request with a key
    "POST /logout": "",
    "POST /locale": "",  # the page language
    "POST /settings/keys": "POST /api/v1/keys",
    "POST /settings/keys/{key_id}/revoke": "DELETE /api/v1/keys/{key_id}",
    "POST /settings/users": "POST /api/v1/users",
    "POST /settings/password": "POST /api/v1/me/password",
    "POST /settings/users/{user_id}/sign-out": "DELETE /api/v1/users/{user_id}/sessions",
    "POST /settings/runs/{run_id}/cancel": "POST /api/v1/runs/{run_id}/cancel",
    "POST /models/local": "POST /api/v1/models/local",
    "POST /models/hub": "POST /api/v1/models/hub",
    "POST /models/{model_id}/retry": "POST /api/v1/models/{model_id}/retry",
    "POST /datasets/{dataset_id}/import": "POST /api/v1/datasets/{dataset_id}/import",
    "POST /datasets/{dataset_id}/validate": "POST /api/v1/datasets/{dataset_id}/validate",
    "POST /datasets/{dataset_id}/upload": "POST /api/v1/datasets/{dataset_id}/upload",
    "POST /datasets/{dataset_id}/clean": "POST /api/v1/datasets/{dataset_id}/versions/{version_id}/cleanings",
    "POST /cleaning/recipes/{recipe_id}/delete": "DELETE /api/v1/cleaning/recipes/{recipe_id}",
    "POST /cleanings/{cleaning_id}/override": "PUT /api/v1/cleanings/{cleaning_id}/overrides",
    "POST /cleanings/{cleaning_id}/override-filter": "POST /api/v1/cleanings/{cleaning_id}/overrides/bulk",
    "POST /cleanings/{cleaning_id}/commit": "POST /api/v1/cleanings/{cleaning_id}/commit",
    "POST /jobs/presets": "POST /api/v1/presets",
    "POST /jobs/presets/{preset_id}/delete": "DELETE /api/v1/presets/{preset_id}",
    "POST /jobs/new/import": "POST /api/v1/jobs",  # the spec travels as JSON in the API
    "POST /jobs/estimate": "POST /api/v1/jobs/estimate",
    "POST /jobs": "POST /api/v1/jobs",
    "POST /jobs/{job_id}/cancel": "POST /api/v1/jobs/{job_id}/cancel",
    "POST /jobs/{job_id}/pause": "POST /api/v1/jobs/{job_id}/pause",
    "POST /jobs/{job_id}/continue": "POST /api/v1/jobs/{job_id}/continue",
    "POST /jobs/{job_id}/evaluations": "POST /api/v1/jobs/{job_id}/evaluations",
    "POST /evaluations/{evaluation_id}/judgements": "POST /api/v1/evaluations/{evaluation_id}/judgements",
    "POST /evaluations/{evaluation_id}/labels": "PUT /api/v1/evaluations/{evaluation_id}/labels/{sample_id}",
    "POST /graders": "POST /api/v1/graders",
    "POST /graders/{grader_id}/delete": "DELETE /api/v1/graders/{grader_id}",
    "POST /graders/try": "POST /v1/fine_tuning/alpha/graders/run",
    "POST /settings/judges": "POST /api/v1/judges",
    "POST /settings/judges/{judge_id}/delete": "DELETE /api/v1/judges/{judge_id}",
    "POST /playground/stream": "POST /v1/chat/completions",
    "POST /playground/feedback": "POST /api/v1/feedback",
    "POST /playground/preferences": "POST /api/v1/feedback/preferences",
    "POST /adapters/upload": "POST /api/v1/adapters",
    "POST /adapters/{job_id}/merge": "POST /api/v1/adapters/{job_id}/merge",
    "POST /adapters/{job_id}/delete": "DELETE /api/v1/adapters/{job_id}",
    "POST /adapters/{job_id}/tags": "PUT /api/v1/adapters/{job_id}/tags",
    "GET /jobs/compare": "GET /api/v1/jobs/compare",
    "GET /jobs/{job_id}/adapter.zip": "GET /api/v1/jobs/{job_id}/adapter",
    "GET /adapters/{job_id}/merged.zip": "GET /api/v1/adapters/{job_id}/merged.zip",
    "POST /adapters/{job_id}/gguf": "POST /api/v1/adapters/{job_id}/gguf/{fmt}",
    "POST /traffic/{completion_id}/review": "PUT /api/v1/traffic/{completion_id}",
    "POST /traffic/dataset": "POST /api/v1/traffic/datasets",
    "POST /traffic/distill": "POST /api/v1/traffic/distillations",
    "POST /deployments": "POST /api/v1/deployments",
    "POST /deployments/{deployment_id}/promote": "POST /api/v1/deployments/{deployment_id}/promote",
    "POST /deployments/{deployment_id}/rollback": "POST /api/v1/deployments/{deployment_id}/rollback",
    "POST /deployments/{deployment_id}/delete": "DELETE /api/v1/deployments/{deployment_id}",
    "GET /adapters/{job_id}/gguf/{fmt}/archive.zip": "GET /api/v1/adapters/{job_id}/gguf/{fmt}/archive.zip",
    "GET /adapters/{job_id}/gguf/{fmt}/file": "GET /api/v1/adapters/{job_id}/gguf/{fmt}/file",
}


def _routes(app: Any) -> list[tuple[str, str]]:
    """(method, path) of every route, through included routers."""
    found = []

    def walk(routes: Any) -> None:
        for route in routes:
            inner = getattr(route, "original_router", None)
            if inner is not None:
                walk(inner.routes)
            elif hasattr(route, "methods") and route.methods:
                found.extend((m, route.path) for m in route.methods if m != "HEAD")

    walk(app.router.routes)
    return found


def test_every_page_action_has_an_api_counterpart(client: Any) -> None:
    schema = client.get("/openapi.json").json()["paths"]
    api = {f"{m.upper()} {path}" for path, ops in schema.items() for m in ops}
    routes = _routes(client.app)
    assert len(routes) > 80, len(routes)
    page_actions = {
        f"{m} {p}"
        for m, p in routes
        if not p.startswith(("/api/", "/v1/", "/static", "/openapi")) and m in ("POST", "PUT", "DELETE")
    }
    missing = sorted(page_actions - set(COUNTERPART))
    assert not missing, f"page actions with no API counterpart named in COUNTERPART: {missing}"
    for page, operation in COUNTERPART.items():
        assert not operation or operation in api, f"{page} → {operation} is not in /openapi.json"


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_estimate_compare_and_feedback_through_the_api(client: Any, setup: dict[str, Any]) -> None:
    body = {"model_id": setup["model"], "dataset_version_id": setup["version"], "spec": {"max_steps": 2}}
    estimate = client.post("/api/v1/jobs/estimate", json={**body, "gpu_gib": 0.001})
    assert estimate.status_code == 200, estimate.text
    found = estimate.json()
    assert found["fits"] is False and found["memory"]["total"] > 0 and found["trainable"] > 0
    assert found["tokens"] > 0 and found["problems"] == []
    bad = client.post("/api/v1/jobs/estimate", json={**body, "spec": {"method": "dpo"}}).json()
    assert bad["problems"] and bad["problems"][0]["field"]  # chat data cannot train DPO: said before launch

    spec = {"max_steps": 1, "batch_size": 4, "eval_steps": 0, "max_seq_length": 64}
    ids = []
    for rate in (1e-4, 3e-4):
        job = client.post("/api/v1/jobs", json={**body, "spec": {**spec, "learning_rate": rate}}).json()
        lifecycle.execute(job["run"]["id"])
        ids.append(job["id"])
    comparison = client.get("/api/v1/jobs/compare", params=[("id", i) for i in ids])
    assert comparison.status_code == 200, comparison.text
    shown = comparison.json()
    assert shown["jobs"] == ids and shown["statuses"] == ["succeeded", "succeeded"]
    assert shown["differing"] == {"learning_rate": [1e-4, 3e-4]}
    assert all(len(c["loss"]) == 1 for c in shown["curves"]) and len(shown["results"]["train_loss"]) == 2
    assert client.get("/api/v1/jobs/compare", params=[("id", ids[0])]).status_code == 422
    assert client.get("/api/v1/jobs/compare", params=[("id", ids[0]), ("id", "nope")]).status_code == 404

    prompt = [{"role": "user", "content": "Add 3 and 3."}]
    tuned, base = f"job-{ids[0]}", f"base-{setup['model']}"
    pick = {"prompt": prompt, "choice": "a", "model_a": tuned, "answer_a": "6", "model_b": base, "answer_b": "five"}
    saved = client.post("/api/v1/feedback", json=pick)
    assert saved.status_code == 201 and saved.json()["counts"]["a"] == 1
    assert client.post("/api/v1/feedback", json={**pick, "model_a": "job-nope"}).status_code in (404, 422)
    assert client.post("/api/v1/feedback", json={**pick, "choice": "maybe"}).status_code == 422
    cut = client.post("/api/v1/feedback", json={**pick, "cut_a": True})  # A ran into max tokens: not "better"
    assert cut.status_code == 422 and cut.json()["error"]["field"] == "choice"
    assert client.get("/api/v1/feedback").json() == {"up": 0, "down": 0, "a": 1, "b": 0}
    made = client.post("/api/v1/feedback/preferences", json={"name": "picks"})
    assert made.status_code == 201, made.text
    dataset = client.get(f"/api/v1/datasets/{made.json()['dataset_id']}").json()
    assert dataset["name"] == "picks"
    assert client.get("/api/v1/feedback").json()["a"] == 0  # used now
    again = client.post("/api/v1/feedback/preferences", json={})
    assert again.status_code == 422  # nothing left to make one from
