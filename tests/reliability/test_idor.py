"""IDOR and safe methods: every route with an id in its path, called by a second user with the first user's
ids, answers 404 and changes nothing; no GET changes anything, even for the owner. The routes are read from
the app itself, so a new route with an id joins the matrix (and a new kind of id fails this test until it is
given an object to point at). Ids in query strings, forms and JSON bodies are tried on the routes that take
them."""

from __future__ import annotations

import re
import uuid
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import MetaData, select

from tests.conftest import csrf_of, login
from worker import lifecycle

EVAL_RUN = {"data_source": {"type": "jsonl", "source": {"type": "file_content", "content": [{"item": {"a": "x"}}]}}}
ADMIN_ONLY = {"DELETE /api/v1/judges/{judge_id}": 403}
# rows that the second user's own requests may legitimately write (their key's last use)
SELF_WRITTEN = {"api_keys": {"last_used_at"}}


def app_routes(app: Any) -> list[tuple[str, str]]:
    """(method, path) of every route, through included routers."""

    def flat(routes: list[Any], prefix: str = "") -> Any:
        for route in routes:
            if hasattr(route, "original_router"):
                yield from flat(route.original_router.routes, prefix + route.include_context.prefix)
            elif hasattr(route, "methods"):
                for method in sorted(route.methods - {"HEAD"}):
                    yield method, prefix + route.path

    return list(flat(app.router.routes))


def _snapshot(settings: Any) -> dict[str, list[tuple[Any, ...]]]:
    from app.db.session import get_engine

    engine = get_engine()
    meta = MetaData()
    meta.reflect(engine)
    out = {}
    with engine.connect() as conn:
        for table in meta.sorted_tables:
            columns = [c for c in table.columns if c.name not in SELF_WRITTEN.get(table.name, set())]
            out[table.name] = sorted(map(tuple, conn.execute(select(*columns)).all()), key=repr)
    files = sorted(str(p.relative_to(settings.data_dir)) for p in settings.artifacts_dir.rglob("*"))
    out["files"] = [(f,) for f in files]
    return out


def _owned_objects(client: Any, setup: dict[str, Any], tmp_path: Path) -> dict[str, str]:
    """The first user's objects, one of each kind a route can name."""

    model, version = setup["model"], setup["version"]
    [dataset] = client.get("/api/v1/datasets").json()
    spec = {"max_steps": 2, "batch_size": 4, "eval_steps": 0, "save_steps": 1, "max_seq_length": 64}
    body = {"model_id": model, "dataset_version_id": version, "spec": spec, "name": "owners-secret-job"}
    job = client.post("/api/v1/jobs", json=body).json()
    lifecycle.execute(job["run"]["id"])
    [evaluation] = client.get("/api/v1/evaluations").json()
    lifecycle.execute(evaluation["run"]["id"])
    sample = client.get(f"/api/v1/evaluations/{evaluation['id']}/samples").json()
    sample_id = (sample["items"] if isinstance(sample, dict) else sample)[0]["id"]
    judge = client.post(
        "/api/v1/judges", json={"name": "j", "url": "http://127.0.0.1:9/v1", "model": "m", "timeout_s": 1}
    ).json()
    judgement = client.post(f"/api/v1/evaluations/{evaluation['id']}/judgements", json={"judge_id": judge["id"]})
    recipe = client.post(
        "/api/v1/cleaning/recipes", json={"name": "mine", "steps": [{"op": "rules", "params": {"min_words": 1}}]}
    ).json()
    cleaning = client.post(f"/api/v1/datasets/{dataset['id']}/versions/{version}/cleanings", json={}).json()
    lifecycle.execute(cleaning["run"]["id"])
    records = client.get(f"/api/v1/datasets/{dataset['id']}/versions/{version}/records").json()
    record_id = records["records"][0]["id"]
    preset = client.post("/api/v1/presets", json={"name": "mine", "spec": spec}).json()
    key = client.post("/api/v1/keys", json={"name": "mine"}).json()
    [openai_file] = [f for f in client.get("/v1/files").json()["data"] if dataset["id"].replace("-", "") in f["id"]]
    criteria = [{"type": "string_check", "name": "c", "input": "{{ item.a }}", "reference": "x", "operation": "eq"}]
    config = {"type": "custom", "item_schema": {"type": "object"}}
    made = client.post("/v1/evals", json={"data_source_config": config, "testing_criteria": criteria}).json()
    eval_run = client.post(f"/v1/evals/{made['id']}/runs", json=EVAL_RUN).json()
    from app.db.models import EvalRun
    from app.db.session import get_sessionmaker

    with get_sessionmaker()() as session:
        background = session.get(EvalRun, uuid.UUID(eval_run["id"].removeprefix("evalrun_")))
        assert background is not None
        lifecycle.execute(str(background.run_id))
    [item] = client.get(f"/v1/evals/{made['id']}/runs/{eval_run['id']}/output_items").json()["data"]
    grader = client.post("/api/v1/graders", json={"name": "owners-secret-grader", "spec": criteria[0]}).json()
    from app.db.models import User
    from app.openai_api.stored import store

    with get_sessionmaker()() as session:
        owner = session.get(User, uuid.UUID(client.get("/api/v1/me").json()["id"]))
    assert owner is not None
    completion_id = "chatcmpl-owners0secret0answer00"
    store(owner=owner, completion_id=completion_id, created=1_800_000_000, model=f"base-{model}",
          messages=[{"role": "user", "content": "secret?"}], answer="secret", finish_reason="stop", usage=None,
          request={}, metadata={"k": "v"})  # fmt: skip
    gate = {"dataset_version_id": version, "metric": "rouge_l", "sample_size": 3}
    deployment = client.post("/api/v1/deployments", json={"name": "owners-bot", "model": f"base-{model}", "gate": gate})
    assert deployment.status_code == 201, deployment.text
    return {
        "deployment_id": deployment.json()["id"],
        "completion_id": completion_id,
        "grader_id": grader["id"],
        "eval_ident": made["id"],
        "eval_id": made["id"].removeprefix("eval_"),
        "eval_run_id": eval_run["id"].removeprefix("evalrun_"),
        "run_ident": eval_run["id"],
        "item_ident": item["id"],
        "model_id": model,
        "run_id": job["run"]["id"],
        "dataset_id": dataset["id"],
        "version_id": version,
        "record_id": str(record_id),
        "recipe_id": recipe["id"],
        "cleaning_id": cleaning["id"],
        "preset_id": preset["id"],
        "job_id": job["id"],
        "evaluation_id": evaluation["id"],
        "sample_id": str(sample_id),
        "judge_id": judge["id"],
        "judgement_id": judgement.json()["id"],
        "key_id": key["id"],
        "user_id": client.get("/api/v1/me").json()["id"],
        "file_id": openai_file["id"],
        "model": f"job-{job['id']}",
        "job_name": job["name"],
        "dataset_name": dataset["name"],
        "grader_name": grader["name"],
        "fmt": "f16",
    }


def _request_kwargs(method: str, path: str, ids: dict[str, str], token: str) -> dict[str, Any]:
    """A well-formed body for the route, so that only ownership can refuse it."""
    if method in ("GET", "DELETE"):
        return {}
    if path.endswith("/upload"):
        files = {"file": ("a.jsonl", b'{"text": "hello there"}\n')}
        return {"files": files, "data": {"csrf_token": token}}
    if not path.startswith(("/api/", "/v1/")):
        form = {"csrf_token": token, "record_id": ids["record_id"], "action": "keep", "to": "keep", "choice": "tie"}
        return {"data": form | {"judge_id": ids["judge_id"], "tags": "x", "sample_id": ids["sample_id"]}}
    bodies = {
        "/overrides": {"items": [{"record_id": ids["record_id"], "action": "keep"}]},
        "/overrides/bulk": {"to": "keep"},
        "/judgements": {"judge_id": ids["judge_id"]},
        "/labels/{sample_id}": {"choice": "tie"},
        "/tags": {"tags": ["x"]},
        "/resume": {"checkpoint": "checkpoint-1"},
        "/runs": EVAL_RUN,
        "/promote": {"model": ids["model"]},
        "/rollback": {"model": ids["model"]},
        "/chat/completions/{completion_id}": {"metadata": {"k": "v"}},
    }
    template = next((b for suffix, b in bodies.items() if path.endswith(suffix)), {})
    return {"json": template}


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)  # ownership and leases are the same SQL on both
def test_every_route_with_an_id_answers_404_to_another_user(
    client: Any, setup: dict[str, Any], env: Any, tmp_path: Path, loopback_judges: None
) -> None:
    ids = _owned_objects(client, setup, tmp_path)
    token = client.headers["X-CSRF-Token"]
    routes = [(m, p) for m, p in app_routes(client.app) if "{" in p]
    assert len(routes) > 80, routes

    # no GET changes anything, even for the owner (a link or an image can make a browser GET)
    before = _snapshot(env)
    for method, path in routes:
        if method == "GET":
            url = re.sub(r"{(\w+)(:\w+)?}", lambda m: ids[m.group(1)], path)
            assert client.get(url).status_code < 500, url
    assert _snapshot(env) == before
    bob = client.post("/api/v1/users", json={"email": "bob@example.com", "password": "bob-password-1"})
    assert bob.status_code == 201, bob.text
    client.post("/logout", data={"csrf_token": token})
    del client.headers["X-CSRF-Token"]
    login(client, "bob@example.com", "bob-password-1")
    bob_token = csrf_of(client, "/models")
    client.headers["X-CSRF-Token"] = bob_token
    bob_key = client.post("/api/v1/keys", json={"name": "bob"}).json()["key"]
    before = _snapshot(env)
    answers = {}
    for method, path in routes:
        names = re.findall(r"{(\w+)", path)
        assert set(names) <= set(ids), f"{path}: give the IDOR matrix an object for {set(names) - set(ids)}"
        url = re.sub(r"{(\w+)(:\w+)?}", lambda m: ids[m.group(1)], path)
        headers = {"Authorization": f"Bearer {bob_key}"} if path.startswith("/v1/") else {}
        response = client.request(method, url, headers=headers, **_request_kwargs(method, path, ids, bob_token))
        answers[f"{method} {path}"] = response.status_code
    # judges are the installation's, set up by administrators: a member is refused, not shown a 404
    wrong = {route: status for route, status in answers.items() if status != ADMIN_ONLY.get(route, 404)}
    assert not wrong, wrong

    # ids in query strings, forms and JSON bodies
    chat = {"model": ids["model"], "messages": [{"role": "user", "content": "hi"}]}
    pair = {"model_id": ids["model_id"], "dataset_version_id": ids["version_id"]}
    pick = {"prompt": [{"role": "user", "content": "x"}], "model_a": ids["model"], "answer_a": "y", "choice": "up"}
    upload = {"files": {"file": ("a.jsonl", b'{"text": "a b"}\n')}, "data": {"model_id": ids["model_id"]}}
    uses = [
        ("GET", f"/jobs/new?version={ids['version_id']}", {}),
        ("GET", f"/jobs/compare?id={ids['job_id']}&id={ids['job_id']}", {}),
        ("GET", f"/api/v1/jobs/compare?id={ids['job_id']}&id={ids['job_id']}", {}),
        ("GET", f"/playground?a=job-{ids['job_id']}", {}),
        ("POST", "/api/v1/jobs", {"json": pair}),
        ("POST", "/api/v1/jobs/estimate", {"json": pair}),
        ("POST", "/v1/chat/completions", {"json": chat}),
        ("POST", "/v1/fine_tuning/jobs", {"json": {"model": ids["model_id"], "training_file": ids["file_id"]}}),
        ("POST", "/playground/stream", {"json": chat}),
        ("POST", "/api/v1/feedback", {"json": pick}),
        ("POST", "/api/v1/datasets", upload),
        ("POST", "/graders/try", {"data": {"csrf_token": bob_token, "grader_id": ids["grader_id"], "item": "{}"}}),
        ("POST", "/jobs/estimate", {"data": {"csrf_token": bob_token, "reward_grader_id": ids["grader_id"]}}),
    ]
    # a page may ignore an id it cannot use (200), but must not show what it names
    private = [ids["job_name"], ids["dataset_name"], ids["grader_name"]]
    leaks = {}
    for method, url, kwargs in uses:
        headers = {"Authorization": f"Bearer {bob_key}"} if url.startswith("/v1/") else {}
        response = client.request(method, url, headers=headers, **kwargs)
        shown = [name for name in private if name in response.text]
        if response.status_code not in (404, 422, 200) or shown:
            leaks[f"{method} {url}"] = (response.status_code, shown)
    assert not leaks, leaks
    after = _snapshot(env)
    changed = {table: set(after[table]) ^ set(before[table]) for table in before if before[table] != after[table]}
    assert not changed, changed
