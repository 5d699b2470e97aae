"""/v1/fine_tuning/alpha/graders through the official openai client: its typed objects parse our answers,
and a bad grader is a 400 naming the field."""

from __future__ import annotations

from typing import Any

import openai
import pytest

from tests.conftest import csrf_of, make_admin


@pytest.fixture
def api(client: Any) -> openai.OpenAI:
    make_admin(client)
    client.headers["X-CSRF-Token"] = csrf_of(client, "/models")
    secret = client.post("/api/v1/keys", json={"name": "graders"}).json()["key"]
    return openai.OpenAI(base_url="http://testserver/v1", api_key=secret, http_client=client, max_retries=0)


def test_run_and_validate_each_kind_through_the_client(api: openai.OpenAI) -> None:
    check = {
        "type": "string_check",
        "name": "label",
        "input": "{{ sample.output_json.label }}",
        "reference": "{{ item.label }}",
        "operation": "eq",
    }
    run = api.fine_tuning.alpha.graders.run(grader=check, model_sample='{"label": "spam"}', item={"label": "spam"})
    assert run.reward == 1.0 and run.metadata.type == "string_check" and run.metadata.name == "label"
    assert not run.metadata.errors.invalid_variable_error and run.metadata.execution_time >= 0

    python = {
        "type": "python",
        "name": "length",
        "source": "def grade(sample, item):\n    return min(1.0, len(sample['output_text']) / item['n'])\n",
    }
    assert api.fine_tuning.alpha.graders.run(grader=python, model_sample="abcd", item={"n": 8}).reward == 0.5
    broken = api.fine_tuning.alpha.graders.run(
        grader={**python, "source": "def grade(sample, item):\n    return open('/etc/passwd').read()\n"},
        model_sample="x",
        item={},
    )
    assert broken.reward == 0.0 and broken.metadata.errors.python_grader_runtime_error
    assert "refuses reading /etc/passwd" in (broken.metadata.errors.python_grader_runtime_error_details or "")

    multi = {
        "type": "multi",
        "name": "score",
        "graders": {
            "label": check,
            "close": {
                "type": "text_similarity",
                "name": "close",
                "input": "{{ sample.output_text }}",
                "reference": "{{ item.text }}",
                "evaluation_metric": "fuzzy_match",
            },
        },
        "calculate_output": "0.5 * label + 0.5 * close",
    }
    combined = api.fine_tuning.alpha.graders.run(
        grader=multi, model_sample='{"label": "ham"}', item={"label": "spam", "text": '{"label": "ham"}'}
    )
    assert combined.reward == 0.5 and combined.sub_rewards == {"label": 0.0, "close": 1.0}

    validated = api.fine_tuning.alpha.graders.validate(grader=check)
    assert validated.grader is not None and validated.grader.type == "string_check"


def test_a_bad_grader_is_a_400_naming_the_field(api: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as bad:
        api.fine_tuning.alpha.graders.validate(
            grader={"type": "python", "name": "x", "source": "def grade(sample):\n    return 1\n"}
        )
    assert bad.value.param == "grader.source" and "grade(sample, item)" in str(bad.value)
    with pytest.raises(openai.BadRequestError) as unknown:
        api.fine_tuning.alpha.graders.run(
            grader={"type": "string_check", "name": "x", "input": "a", "reference": "b", "operation": "startswith"},
            model_sample="a",
        )
    assert "operation" in (unknown.value.param or "")


def test_graders_need_an_api_key(client: Any) -> None:
    anonymous = openai.OpenAI(base_url="http://testserver/v1", api_key="rf-nobody", http_client=client, max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        anonymous.fine_tuning.alpha.graders.validate(
            grader={"type": "string_check", "name": "x", "input": "a", "reference": "a", "operation": "eq"}
        )


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)  # judges are read the same way on both
def test_model_graders_ask_a_judge_set_up_here(api: openai.OpenAI, client: Any, loopback_judges: None) -> None:
    from tests.evaluation.fake_judge import FakeJudge

    with FakeJudge(slow_s=3) as judge:
        made = client.post(
            "/api/v1/judges",
            json={"name": "gpt-4o-2024-08-06", "url": judge.url, "model": "stand-in", "timeout_s": 1},
        )
        assert made.status_code == 201, made.text
        score = {
            "type": "score_model",
            "name": "quality",
            "model": "gpt-4o-2024-08-06",  # an OpenAI script's model name, an administrator's judge here
            "input": [
                {"role": "system", "content": "Rate the answer from 0 to 10."},
                {"role": "user", "content": [{"type": "input_text", "text": "Answer: {{ sample.output_text }}"}]},
            ],
            "range": [0, 10],
        }
        good = api.fine_tuning.alpha.graders.run(grader=score, model_sample="a GOOD answer")
        assert good.reward == 8 and good.metadata.sampled_model_name == "gpt-4o-2024-08-06"
        assert api.fine_tuning.alpha.graders.run(grader=score, model_sample="meh").reward == 2
        prose = api.fine_tuning.alpha.graders.run(grader=score, model_sample="MALFORMED")
        assert prose.reward == 0 and prose.metadata.errors.model_grader_parse_error
        slow = api.fine_tuning.alpha.graders.run(grader=score, model_sample="SLOW")
        assert slow.reward == 0 and slow.metadata.errors.model_grader_server_error
        assert "timeout" in (slow.metadata.errors.model_grader_server_error_details or "")

        label = {
            "type": "label_model",
            "name": "sentiment",
            "model": "stand-in",  # the model name the judge serves finds it too
            "input": [{"role": "user", "content": "Is this positive? {{ sample.output_text }}"}],
            "labels": ["positive", "negative"],
            "passing_labels": ["positive"],
        }
        assert api.fine_tuning.alpha.graders.run(grader=label, model_sample="GOOD").reward == 1.0
        assert api.fine_tuning.alpha.graders.run(grader=label, model_sample="bad").reward == 0.0
        both = {"type": "multi", "name": "m", "graders": {"s": score, "l": label}, "calculate_output": "s / 10 + l"}
        assert api.fine_tuning.alpha.graders.run(grader=both, model_sample="GOOD").reward == pytest.approx(1.8)

    with pytest.raises(openai.BadRequestError) as unknown:
        api.fine_tuning.alpha.graders.validate(grader={**score, "model": "o3"})
    assert unknown.value.param == "grader.model" and "gpt-4o-2024-08-06" in str(unknown.value)
    with pytest.raises(openai.BadRequestError) as labels:
        api.fine_tuning.alpha.graders.validate(grader={**label, "passing_labels": ["great"]})
    assert labels.value.param == "grader.passing_labels"
    with pytest.raises(openai.BadRequestError) as bounds:
        api.fine_tuning.alpha.graders.validate(grader={**score, "range": [5, 1]})
    assert bounds.value.param == "grader.range"
