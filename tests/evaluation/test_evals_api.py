"""/v1/evals through the official openai client: an eval with three kinds of criteria, runs on inline items
and on an uploaded file graded by the worker's child, the counts, the output items and their filters; bad
input refused naming the field (another user's view is tests/reliability/test_idor.py's)."""

from __future__ import annotations

import json
from typing import Any

import openai
import pytest

from tests.conftest import csrf_of, make_admin
from worker import lifecycle

CRITERIA: list[dict[str, Any]] = [
    {
        "type": "string_check",
        "name": "label",
        "input": "{{ sample.output_json.label }}",
        "reference": "{{ item.label }}",
        "operation": "eq",
    },
    {
        "type": "text_similarity",
        "name": "close",
        "input": "{{ sample.output_json.label }}",
        "reference": "{{ item.label }}",
        "evaluation_metric": "fuzzy_match",
        "pass_threshold": 0.8,
    },
    {
        "type": "python",
        "name": "short",
        "source": "def grade(sample, item):\n    return 1.0 if len(sample['output_text']) < 40 else 0.0\n",
    },
]
ITEMS: list[dict[str, Any]] = [
    {"item": {"text": "Win money now", "label": "spam"}, "sample": {"output_text": '{"label": "spam"}'}},
    {"item": {"text": "Lunch at noon?", "label": "ham"}, "sample": {"output_text": '{"label": "ham"}'}},
    {"item": {"text": "Cheap pills", "label": "spam"}, "sample": {"output_text": '{"label": "ham"}'}},
    {"item": {"text": "No answer here", "label": "ham"}},  # nothing to grade: an error, not a pass
]


@pytest.fixture
def api(client: Any) -> openai.OpenAI:
    make_admin(client)
    client.headers["X-CSRF-Token"] = csrf_of(client, "/models")
    secret = client.post("/api/v1/keys", json={"name": "evals"}).json()["key"]
    return openai.OpenAI(base_url="http://testserver/v1", api_key=secret, http_client=client, max_retries=0)


def execute(run_ident: str) -> None:
    """The worker's part, here in the test: run the eval run's background run to its end."""
    import uuid

    from app.db.models import EvalRun
    from app.db.session import get_sessionmaker

    with get_sessionmaker()() as session:
        row = session.get(EvalRun, uuid.UUID(run_ident.removeprefix("evalrun_")))
        assert row is not None and row.run_id is not None
        background = str(row.run_id)
    lifecycle.execute(background)


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)  # the eval's rows meet PostgreSQL below
def test_an_eval_grades_inline_items_and_a_file(api: openai.OpenAI, client: Any) -> None:
    schema = {"type": "object", "properties": {"text": {"type": "string"}, "label": {"type": "string"}}}
    config: Any = {"type": "custom", "item_schema": schema, "include_sample_schema": True}
    made = api.evals.create(
        name="spam filter",
        data_source_config=config,
        testing_criteria=CRITERIA,  # type: ignore[arg-type]
        metadata={"team": "mail"},
    )
    assert made.id.startswith("eval_") and made.name == "spam filter" and made.metadata == {"team": "mail"}
    assert made.data_source_config.type == "custom" and "sample" in made.data_source_config.schema_["properties"]
    assert [c.name for c in made.testing_criteria] == ["label", "close", "short"]

    run = api.evals.runs.create(
        made.id,
        name="inline",
        data_source={"type": "jsonl", "source": {"type": "file_content", "content": ITEMS}},  # type: ignore[typeddict-item]
    )
    assert run.status == "queued" and run.eval_id == made.id and "/evals/" in run.report_url
    execute(run.id)
    done = api.evals.runs.retrieve(run.id, eval_id=made.id)
    assert done.status == "completed"
    counts = done.result_counts
    assert (counts.total, counts.passed, counts.failed, counts.errored) == (4, 2, 1, 1)
    per = {r.testing_criteria: (r.passed, r.failed) for r in done.per_testing_criteria_results}
    assert per == {"label": (2, 2), "close": (2, 2), "short": (3, 1)}

    items = list(api.evals.runs.output_items.list(run.id, eval_id=made.id))
    assert [i.datasource_item_id for i in items] == [0, 1, 2, 3]
    assert [i.status for i in items] == ["pass", "pass", "fail", "error"]
    wrong = items[2]
    assert wrong.datasource_item == ITEMS[2]["item"] and wrong.sample.output[0].content == '{"label": "ham"}'
    scores = {r.name: (r.score, r.passed) for r in wrong.results}
    assert scores["label"] == (0.0, False) and scores["short"] == (1.0, True)
    # Indel similarity of "ham" and "spam": 2 × len("am") / (3 + 4), under the 0.8 threshold
    assert scores["close"][0] == pytest.approx(4 / 7) and not scores["close"][1]
    errored = items[3].results[0]
    assert errored.sample is not None and errored.sample["errors"] == ["sample_parse_error"]
    failing = api.evals.runs.output_items.list(run.id, eval_id=made.id, status="fail")
    assert [i.datasource_item_id for i in failing.data] == [2]
    one = api.evals.runs.output_items.retrieve(items[1].id, eval_id=made.id, run_id=run.id)
    assert one.status == "pass" and one.datasource_item["label"] == "ham"

    # the report_url is the run's page in the browser: counts, each criterion's pass rate, each item's grades
    page = client.get(done.report_url.removeprefix("http://testserver"))
    assert page.status_code == 200
    assert '<div data-count="passed"><strong>2</strong>' in page.text
    assert page.text.count('<tr data-item="') == 4 and 'data-status="error"' in page.text
    assert "sample_parse_error" in page.text and "spam filter" in client.get("/evals").text
    assert '{"text": "Win money now", "label": "spam"}'.replace('"', "&#34;") in page.text  # readable JSON

    # cosine similarity is a criterion of evals (the worker embeds), though not of /graders/run (the web)
    meaning = {
        "type": "text_similarity",
        "name": "meaning",
        "input": "{{ sample.output_text }}",
        "reference": "{{ item.answer }}",
        "evaluation_metric": "cosine",
        "pass_threshold": 0.9,
    }
    with pytest.raises(openai.BadRequestError):
        api.fine_tuning.alpha.graders.validate(grader={**meaning, "pass_threshold": None})
    by_meaning = api.evals.create(data_source_config=config, testing_criteria=[meaning])  # type: ignore[list-item]
    pairs = [("The cat sat on the mat.", "The cat sat on the mat."), ("Revenue rose.", "The cat sat on the mat.")]
    content = [{"item": {"answer": a}, "sample": {"output_text": o}} for o, a in pairs]
    cosine_run = api.evals.runs.create(
        by_meaning.id, data_source={"type": "jsonl", "source": {"type": "file_content", "content": content}}
    )
    execute(cosine_run.id)
    graded = list(api.evals.runs.output_items.list(cosine_run.id, eval_id=by_meaning.id))
    assert [g.status for g in graded] == ["pass", "fail"] and graded[0].results[0].score == pytest.approx(1, abs=1e-5)

    # the same items as an uploaded file (OpenAI's eval files: one {"item", "sample"} per line)
    lines = "\n".join(json.dumps(i) for i in ITEMS[:3]) + "\n"
    uploaded = api.files.create(file=("items.jsonl", lines.encode()), purpose="fine-tune")
    from_file = api.evals.runs.create(
        made.id, data_source={"type": "jsonl", "source": {"type": "file_id", "id": uploaded.id}}
    )
    execute(from_file.id)
    counted = api.evals.runs.retrieve(from_file.id, eval_id=made.id).result_counts
    assert (counted.total, counted.passed, counted.failed, counted.errored) == (3, 2, 1, 0)

    assert [r.id for r in api.evals.runs.list(made.id)] == [run.id, from_file.id]
    assert [r.id for r in api.evals.runs.list(made.id, order="desc").data] == [from_file.id, run.id]
    renamed = api.evals.update(made.id, name="spam filter v2")
    assert renamed.name == "spam filter v2" and [e.id for e in api.evals.list()] == [made.id, by_meaning.id]
    gone = api.evals.runs.delete(from_file.id, eval_id=made.id)
    assert gone.deleted and [r.id for r in api.evals.runs.list(made.id)] == [run.id]
    from app.datasets.storage import artifact_path

    folder = artifact_path(f"evals/{made.id.removeprefix('eval_')}")
    assert (folder / run.id.removeprefix("evalrun_") / "output_items.jsonl").is_file()
    assert api.evals.delete(made.id).deleted
    assert not folder.exists()  # its runs' items and grades went with it
    with pytest.raises(openai.NotFoundError):
        api.evals.retrieve(made.id)


def test_bad_evals_and_runs_are_refused_naming_the_field(api: openai.OpenAI) -> None:
    config: Any = {"type": "custom", "item_schema": {"type": "object"}, "include_sample_schema": True}
    with pytest.raises(openai.BadRequestError) as no_threshold:
        api.evals.create(data_source_config=config, testing_criteria=[{**CRITERIA[1], "pass_threshold": None}])
    assert no_threshold.value.param == "testing_criteria.0.pass_threshold"
    judge = {"type": "score_model", "name": "q", "model": "gpt-4o", "input": [{"role": "user", "content": "x"}]}
    with pytest.raises(openai.BadRequestError) as no_judge:
        api.evals.create(data_source_config=config, testing_criteria=[judge])
    assert no_judge.value.param == "testing_criteria.0.model"
    with pytest.raises(openai.BadRequestError) as twice:
        api.evals.create(data_source_config=config, testing_criteria=[CRITERIA[0], CRITERIA[0]])
    assert twice.value.param == "testing_criteria.1.name"
    with pytest.raises(openai.BadRequestError) as logs:
        api.evals.create(data_source_config={"type": "logs"}, testing_criteria=[CRITERIA[0]])
    assert logs.value.param == "data_source_config.type"

    made = api.evals.create(data_source_config=config, testing_criteria=[CRITERIA[0]])
    with pytest.raises(openai.BadRequestError) as stored:  # a filter over stored responses: none are kept here
        api.evals.runs.create(
            made.id,
            data_source={
                "type": "responses",
                "model": "base-x",
                "source": {"type": "responses", "metadata": {"team": "a"}},
                "input_messages": {"type": "template", "template": [{"role": "user", "content": "{{ item.a }}"}]},
            },
        )
    assert stored.value.param == "data_source.source.type" and "file_content" in str(stored.value)
    with pytest.raises(openai.BadRequestError) as no_model:  # a responses source samples a model: it names one
        api.evals.runs.create(
            made.id,
            data_source={  # type: ignore[typeddict-item]
                "type": "responses",
                "source": {"type": "file_content", "content": ITEMS},
            },
        )
    assert no_model.value.param is not None and no_model.value.param.startswith("data_source")
    completions: Any = {
        "type": "completions",
        "model": "base-x",
        "source": {"type": "file_content", "content": ITEMS},
        "input_messages": {"type": "template", "template": [{"role": "user", "content": "{{ sample.output_text }}"}]},
    }
    with pytest.raises(openai.BadRequestError) as reads_sample:
        api.evals.runs.create(made.id, data_source=completions)
    assert reads_sample.value.param == "data_source.input_messages.template.0.content"
    broken = api.files.create(file=("bad.jsonl", b'{"item": {"a": 1}}\nnot json\n'), purpose="fine-tune")
    with pytest.raises(openai.BadRequestError) as line:
        api.evals.runs.create(made.id, data_source={"type": "jsonl", "source": {"type": "file_id", "id": broken.id}})
    assert line.value.param == "data_source.source.id" and "Line 2" in str(line.value)
