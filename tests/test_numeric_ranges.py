"""Issue 25, finding 7: every number a request can carry has its range in the OpenAPI schema, and a value
outside it is refused naming the field: 400 on /v1 as OpenAI answers, 422 on /api/v1 as every
validation error there (a seed of 2**64 reached the inference process and came back 503)."""

from __future__ import annotations

from typing import Any

import openai
import pytest

from tests.conftest import make_admin


def _unbounded(schema: dict[str, Any]) -> list[str]:
    components = schema["components"]["schemas"]
    found: list[str] = []

    def walk(node: Any, where: str, seen: frozenset[str]) -> None:
        if isinstance(node, list):
            for item in node:
                walk(item, where, seen)
            return
        if not isinstance(node, dict):
            return
        if "$ref" in node:
            name = node["$ref"].rsplit("/", 1)[-1]
            if name not in seen:
                walk(components[name], name, seen | {name})
            return
        if node.get("type") in ("integer", "number"):
            low = "minimum" in node or "exclusiveMinimum" in node
            high = "maximum" in node or "exclusiveMaximum" in node
            if not (low and high):
                found.append(where)
        for key, value in node.items():
            walk(value, where if key in ("properties", "anyOf", "oneOf", "allOf", "items") else f"{where}.{key}", seen)

    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            for parameter in operation.get("parameters", []):
                walk(parameter.get("schema", {}), f"{method.upper()} {path} ?{parameter['name']}", frozenset())
            for content in operation.get("requestBody", {}).get("content", {}).values():
                walk(content.get("schema", {}), f"{method.upper()} {path} body", frozenset())
    return sorted(set(found))


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_every_number_in_a_request_has_a_range(client: Any) -> None:
    assert _unbounded(client.get("/openapi.json").json()) == []


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_out_of_range_numbers_are_a_400_naming_the_field(client: Any) -> None:
    make_admin(client)
    secret = client.post("/api/v1/keys", json={"name": "k"}, headers={"X-CSRF-Token": _csrf(client)}).json()["key"]
    ai = openai.OpenAI(base_url="http://testserver/v1", api_key=secret, http_client=client, max_retries=0)
    for seed in (2**64, -(2**64)):
        with pytest.raises(openai.BadRequestError) as refused:
            ai.chat.completions.create(model="anything", messages=[{"role": "user", "content": "hi"}], seed=seed)
        assert refused.value.status_code == 400 and refused.value.param == "seed", refused.value.body
    auth = {"Authorization": f"Bearer {secret}"}
    for path, field in (
        ("/api/v1/runs/00000000-0000-0000-0000-000000000000/events?after=99999999999999999999", "after"),
        ("/api/v1/datasets/00000000-0000-0000-0000-000000000000/report?page=0", "page"),
    ):
        answer = client.get(path, headers=auth)
        assert answer.status_code == 422 and answer.json()["error"]["field"] == field, answer.text
    upload = client.post(
        "/api/v1/datasets",
        headers=auth,
        files={"file": ("a.jsonl", b'{"text": "x"}\n')},
        data={"seed": str(2**40)},
    )
    assert upload.status_code == 422 and upload.json()["error"]["field"] == "seed", upload.text
    nan = client.post(
        "/api/v1/datasets", headers=auth, files={"file": ("a.jsonl", b'{"text": "x"}\n')}, data={"split_test": "nan"}
    )
    assert nan.status_code == 422, nan.text


def _csrf(client: Any) -> str:
    from tests.conftest import csrf_of

    return csrf_of(client, "/models")
