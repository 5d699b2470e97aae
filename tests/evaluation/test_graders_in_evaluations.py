"""Graders in the browser: defined by name on the Evaluations page (with its "try it on one sample" box) and
through /api/v1/graders, attached to a job's evaluation, where every model's answers are graded beside them
and the verdict counts passes; the record's own fields reach the grader as item. Another user sees none."""

from __future__ import annotations

import json
import re
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import csrf_of, login, make_admin
from worker import lifecycle

EQUALS = {
    "type": "string_check",
    "name": "ignored",
    "input": "{{ sample.output_text }}",
    "reference": "{{ item.reference }}",
    "operation": "eq",
}
# reads a field of the uploaded line ("n"), which only reaches the grader if the record kept it
KNOWS_N = {
    "type": "python",
    "name": "ignored",
    "source": "def grade(sample, item):\n"
    "    return 1.0 if item['n'] * 2 == int(item['reference'].split()[-1]) else 0.0\n",
}


def _page_form(client: Any, name: str, spec: Any) -> Any:
    body = spec if isinstance(spec, str) else json.dumps(spec)
    return client.post(
        "/graders",
        data={"csrf_token": client.headers["X-CSRF-Token"], "name": name, "spec": body},
        follow_redirects=False,
    )


def test_graders_are_defined_tried_and_kept_per_user(client: Any) -> None:
    make_admin(client)
    client.headers["X-CSRF-Token"] = csrf_of(client, "/models")
    page = client.get("/evaluations")
    assert page.status_code == 200 and 'id="grader-form"' in page.text and 'data-fill="#grader-spec"' in page.text
    assert page.text.count('id="grader-form"') == 1 and "<title>Evaluations" in page.text

    saved = _page_form(client, "exact answer", EQUALS)
    assert saved.status_code == 303 and saved.headers["location"].startswith("/evaluations#grader-")
    [row] = client.get("/api/v1/graders").json()
    assert row["name"] == "exact answer" and row["spec"]["name"] == "exact answer"  # saved under its name

    # mistakes come back on the page, beside the form as it was typed
    broken_json = _page_form(client, "x", '{"type": "string_check",\n "name": }')
    assert (
        broken_json.status_code == 422
        and "spec is not valid JSON" in broken_json.text
        and "(line 2)" in broken_json.text
    )
    assert '"name": }' in broken_json.text.replace("&#34;", '"')
    bad_template = _page_form(client, "x", {**EQUALS, "reference": "{{ answer }}"})
    assert bad_template.status_code == 422 and "spec.reference" in bad_template.text
    assert "templates read" in bad_template.text
    bad_source = _page_form(client, "x", {**KNOWS_N, "source": "def grade(sample):\n    return 1\n"})
    assert bad_source.status_code == 422 and "grade(sample, item)" in bad_source.text
    no_type = client.post("/api/v1/graders", json={"name": "x", "spec": {"type": "nonsense", "name": "x"}})
    assert no_type.status_code == 422
    assert len(client.get("/api/v1/graders").json()) == 1

    # "try it on one sample": the saved one, or the JSON in the box
    def tried(**form: str) -> str:
        answer = client.post("/graders/try", data={"csrf_token": client.headers["X-CSRF-Token"], **form})
        assert answer.status_code == 200
        return answer.text

    passing = tried(grader_id=row["id"], item='{"reference": "Paris"}', output_text="Paris")
    assert 'data-try="pass"' in passing and 'data-score="1.0"' in passing
    failing = tried(grader_id=row["id"], item='{"reference": "Paris"}', output_text="Lyon")
    assert 'data-try="fail"' in failing
    missing = tried(grader_id=row["id"], item="{}", output_text="Paris")
    assert (
        'data-try="error"' in missing
        and "invalid_variable_error" in missing
        and "has no &#39;reference&#39;" in missing
    )
    crash = {**KNOWS_N, "source": "def grade(sample, item):\n    return 1 / 0\n"}
    crashed = tried(spec=json.dumps(crash), item="{}", output_text="x")
    assert 'data-try="error"' in crashed and "ZeroDivisionError" in crashed
    cosine = {**EQUALS, "type": "text_similarity", "evaluation_metric": "cosine", "pass_threshold": 0.5}
    del cosine["operation"]
    assert "graded by the worker" in tried(spec=json.dumps(cosine), item='{"reference": "a"}', output_text="a")
    assert "item is not valid JSON" in tried(grader_id=row["id"], item="{nope", output_text="x")
    assert "must be a JSON object" in tried(grader_id=row["id"], item="[1]", output_text="x")

    # another user sees and changes none of it
    client.post("/api/v1/users", json={"email": "eve@example.com", "password": "eve-password-1"})
    client.post("/logout", data={"csrf_token": client.headers.pop("X-CSRF-Token")})
    login(client, "eve@example.com", "eve-password-1")
    client.headers["X-CSRF-Token"] = csrf_of(client, "/models")
    assert client.get("/api/v1/graders").json() == []
    assert "exact answer" not in client.get("/evaluations").text
    assert client.get(f"/api/v1/graders/{row['id']}").status_code == 404
    assert client.delete(f"/api/v1/graders/{row['id']}").status_code == 404
    assert (
        client.post(f"/graders/{row['id']}/delete", data={"csrf_token": client.headers["X-CSRF-Token"]}).status_code
        == 404
    )
    assert 'data-try="error"' in tried(grader_id=row["id"], item="{}", output_text="x")  # "No such grader."
    assert client.get(f"/api/v1/graders/{uuid.uuid4()}").status_code == 404


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_an_evaluation_with_graders_grades_every_answer_and_counts_passes(
    client: Any, tiny_model_dir: Path, tmp_path: Path
) -> None:
    make_admin(client)
    client.headers["X-CSRF-Token"] = csrf_of(client, "/models")
    model = client.post("/api/v1/models/local", json={"name": "tiny", "path": str(tiny_model_dir)}).json()
    lifecycle.execute(model["import_run"]["id"])
    lines = [
        {
            "messages": [
                {"role": "user", "content": f"Double {i}."},
                {"role": "assistant", "content": f"It is {2 * i}"},
            ],
            "n": i,
        }
        for i in range(50)
    ]
    path = tmp_path / "doubles.jsonl"
    path.write_text("\n".join(json.dumps(line) for line in lines))
    with path.open("rb") as handle:
        dataset = client.post("/api/v1/datasets", files={"file": ("doubles.jsonl", handle)}).json()
    lifecycle.execute(dataset["validation_run"]["id"])
    version = client.get(f"/api/v1/datasets/{dataset['id']}").json()["versions"][0]
    spec = {"max_steps": 2, "batch_size": 4, "eval_steps": 0, "max_seq_length": 64}
    job = client.post(
        "/api/v1/jobs", json={"model_id": model["id"], "dataset_version_id": version["id"], "spec": spec}
    ).json()
    lifecycle.execute(job["run"]["id"])
    equals = client.post("/api/v1/graders", json={"name": "exact", "spec": EQUALS}).json()
    knows = client.post("/api/v1/graders", json={"name": "knows n", "spec": KNOWS_N}).json()

    page = client.get(f"/jobs/{job['id']}")
    assert 'id="evaluate-graders"' in page.text and 'value="' + knows["id"] + '"' in page.text
    started = client.post(
        f"/jobs/{job['id']}/evaluations",
        data={
            "csrf_token": client.headers["X-CSRF-Token"],
            "sample_size": "4",
            "grader_ids": [equals["id"], knows["id"]],
        },
        follow_redirects=False,
    )
    assert started.status_code == 303
    evaluation_id = started.headers["location"].rsplit("/", 1)[1]
    evaluation = client.get(f"/api/v1/evaluations/{evaluation_id}").json()
    assert [g["name"] for g in evaluation["options"]["graders"]] == ["exact", "knows n"]
    client.delete(f"/api/v1/graders/{knows['id']}")  # the evaluation graded with its own copy
    lifecycle.execute(evaluation["run"]["id"])
    report = client.get(f"/api/v1/evaluations/{evaluation_id}").json()
    assert report["run"]["status"] == "succeeded", report["run"]
    graded = report["summary"]["graders"]
    assert graded["names"] == ["exact", "knows n"] and set(graded["variants"]) == {"base", "few_shot", "tuned"}
    answered = report["summary"]["sample_size"]
    assert answered >= 2
    for counts in graded["variants"].values():
        assert counts["total"] == answered and counts["errors"] == 0
        assert counts["mean"]["knows n"] == 1.0  # the line's own field reached the python grader as item.n
        # passing means passing both: an answer passes exactly when it equals the reference
        assert 0 <= counts["passed"] <= answered
    samples = client.get(f"/api/v1/evaluations/{evaluation_id}/samples").json()
    for sample in samples:
        for variant in ("base", "few_shot", "tuned"):
            grades = {g["name"]: g for g in sample[variant]["grades"]}
            assert grades["knows n"]["passed"] is True
            assert grades["exact"]["passed"] is (sample[variant]["output"] == sample["reference"])
    tuned, base, few = (graded["variants"][v] for v in ("tuned", "base", "few_shot"))
    # the verdict counts passes, then says so few answers are too few to tell
    assert (
        report["verdict"].startswith("Graded by exact, knows n: the tuned model passes")
        and "too few" in report["verdict"]
    )
    from app.evaluation.service import grader_verdict

    line = grader_verdict(graded)
    assert f"passes {tuned['passed']}/{answered}, the base model {base['passed']}/{answered}" in line
    assert f"{few['passed']}/{answered}" in line

    report_page = client.get(f"/evaluations/{evaluation_id}").text
    assert 'id="grader-bars"' in report_page and 'data-grader="knows n"' in report_page
    assert len(re.findall(r'data-grade="knows n" data-passed="true"', report_page)) >= 3 * answered
    assert "passes" in client.get(f"/jobs/{job['id']}").text

    # the training form: a saved grader is the reward of a GRPO job (reinforcement fine-tuning), copied in
    form = client.get("/jobs/new").text
    assert 'name="reward_grader_id"' in form and f'value="{equals["id"]}"' in form
    made = client.post(
        "/jobs",
        data={
            "csrf_token": client.headers["X-CSRF-Token"],
            "model_id": model["id"],
            "dataset_version_id": version["id"],
            "method": "grpo",
            "reward_grader_id": equals["id"],
            "num_generations": "2",
            "max_steps": "1",
        },
        follow_redirects=False,
    )
    assert made.status_code == 303, made.text
    rl_job = client.get(f"/api/v1/jobs/{made.headers['location'].rsplit('/', 1)[1]}").json()
    assert rl_job["spec"]["grader"]["name"] == "exact" and rl_job["spec"]["method"] == "grpo"
    assert 'data-chart="reward"' in client.get(f"/jobs/{rl_job['id']}").text
    client.post(f"/api/v1/jobs/{rl_job['id']}/cancel")
    cloned = client.get(f"/jobs/new?from={rl_job['id']}").text
    assert 'value="before" selected' in cloned and "as before: exact" in cloned and 'name="grader"' in cloned
    neither = client.post(
        "/jobs",
        data={
            "csrf_token": client.headers["X-CSRF-Token"],
            "model_id": model["id"],
            "dataset_version_id": version["id"],
            "method": "grpo",
        },
    )
    assert neither.status_code == 422 and "needs a reward" in neither.text

    # a grader id that is not the user's is refused by name, nothing is created
    before = len(client.get("/api/v1/evaluations").json())
    refused = client.post(f"/api/v1/jobs/{job['id']}/evaluations", json={"grader_ids": [str(uuid.uuid4())]})
    assert refused.status_code == 404 and len(client.get("/api/v1/evaluations").json()) == before


def test_the_grader_verdict_reads_the_counts() -> None:
    from app.core import i18n
    from app.evaluation.service import grader_verdict

    def counts(tuned: int, base: int, few: int) -> dict[str, Any]:
        return {
            "names": ["fields"],
            "variants": {
                v: {"passed": n, "errors": 0, "total": 40, "mean": {"fields": n / 40}}
                for v, n in (("tuned", tuned), ("base", base), ("few_shot", few))
            },
        }

    i18n.set_locale("en")
    if True:
        helped = grader_verdict(counts(38, 3, 11))
        assert helped.startswith("Graded by fields: the tuned model passes 38/40, the base model 3/40, the base model")
        assert "11/40" in helped and "clearly helped" in helped
        assert "Few-shot prompting" in grader_verdict(counts(20, 3, 19))
        assert "did not clearly improve" in grader_verdict(counts(5, 4, 3))
