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
