"""Datasets through the JSON API with an API key: upload, validation run, decisions, versions, records,
download, limits and ownership. The validation run executes for real (child process) via the lifecycle."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from app.db.models import Dataset
from app.db.session import session_scope
from tests.conftest import SHARED_DATASETS, csrf_of, make_admin
from worker import lifecycle


@pytest.fixture
def api(client: Any) -> Any:
    make_admin(client)
    token = csrf_of(client, "/settings/keys")
    key = client.post("/api/v1/keys", json={"name": "t"}, headers={"X-CSRF-Token": token}).json()["key"]
    client.headers["Authorization"] = f"Bearer {key}"
    return client


@pytest.fixture
def ready_model(api: Any, tiny_model_dir: Path) -> str:
    """The tiny model (SmolLM2's tokenizer and template) imported, so datasets get token statistics."""
    token = csrf_of(api, "/models")
    model = api.post(
        "/api/v1/models/local", json={"name": "tiny", "path": str(tiny_model_dir)}, headers={"X-CSRF-Token": token}
    ).json()
    lifecycle.execute(model["import_run"]["id"])
    assert api.get(f"/api/v1/models/{model['id']}").json()["status"] == "ready"
    return str(model["id"])


def _upload(api: Any, path: Path, **fields: str) -> dict[str, Any]:
    with path.open("rb") as handle:
        response = api.post("/api/v1/datasets", files={"file": (path.name, handle)}, data=fields)
    assert response.status_code == 202, response.text
    return dict(response.json())


def _validate(api: Any, dataset: dict[str, Any]) -> dict[str, Any]:
    lifecycle.execute(dataset["validation_run"]["id"])
    return dict(api.get(f"/api/v1/datasets/{dataset['id']}").json())


def test_alpaca_upload_report_import_versions_records_and_download(api: Any, ready_model: str) -> None:
    dataset = _upload(
        api,
        SHARED_DATASETS / "alpaca_5000.json",
        name="alpaca",
        split_train="0.8",
        split_validation="0.1",
        split_test="0.1",
        seed="7",
    )
    assert dataset["status"] == "validating" and dataset["filename"] == "alpaca_5000.json"
    done = _validate(api, dataset)
    assert done["status"] == "needs_review" and done["record_format"] == "alpaca"
    assert done["report"]["valid_lines"] == 4998 and done["report"]["invalid_lines"] == 2
    report = api.get(f"/api/v1/datasets/{dataset['id']}/report").json()
    assert report["by_code"] == {"empty_content": 2}
    assert [i["line"] for i in report["issues"]] == [2336, 4659] and "empty" in report["issues"][0]["message"]
    assert done["versions"] == []  # nothing is imported until the user decides

    version = api.post(f"/api/v1/datasets/{dataset['id']}/import").json()
    assert version["number"] == 1 and version["record_count"] == 4998 and version["skipped_count"] == 2
    assert sum(version["split_counts"].values()) == 4998
    assert 0.75 < version["split_counts"]["train"] / 4998 < 0.85
    assert version["options"]["split_seed"] == 7 and version["options"]["model_id"] == ready_model
    assert version["stats"]["tokens"]["counted"] == 4998 and 60 < version["stats"]["tokens"]["mean"] < 200
    assert api.post(f"/api/v1/datasets/{dataset['id']}/import").status_code == 409

    page = api.get(
        f"/api/v1/datasets/{dataset['id']}/versions/{version['id']}/records", params={"q": "World Bank", "page": 1}
    ).json()
    assert page["total"] >= 1 and all("world bank" in json.dumps(r["data"]).lower() for r in page["records"])
    test_only = api.get(
        f"/api/v1/datasets/{dataset['id']}/versions/{version['id']}/records", params={"split": "test"}
    ).json()
    assert test_only["total"] == version["split_counts"]["test"]

    download = api.get(f"/api/v1/datasets/{dataset['id']}/versions/{version['id']}/download")
    assert download.status_code == 200 and "attachment" in download.headers["content-disposition"]
    lines = [json.loads(x) for x in download.text.splitlines()]
    assert len(lines) == 4998 and lines[0]["source_line"] == 1 and lines[0]["messages"][1]["role"] == "assistant"


def test_clean_file_becomes_version_one_and_chinese_search_works(api: Any, tmp_path: Path) -> None:
    path = tmp_path / "zh.jsonl"
    rows = [
        {"messages": [{"role": "user", "content": "今天天气怎么样？"}, {"role": "assistant", "content": "晴天。"}]},
        {"messages": [{"role": "user", "content": "Hello"}, {"role": "assistant", "content": "Hi"}]},
    ]
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows))
    done = _validate(api, _upload(api, path))
    assert done["status"] == "ready" and done["versions"][0]["skipped_count"] == 0
    assert done["versions"][0]["stats"]["languages"] == {"Chinese (Han)": 1, "Latin": 1}
    found = api.get(
        f"/api/v1/datasets/{done['id']}/versions/{done['versions'][0]['id']}/records", params={"q": "天气"}
    ).json()
    assert found["total"] == 1 and found["records"][0]["source_line"] == 1


def test_fix_and_reupload_then_revalidate_with_options(api: Any, tmp_path: Path) -> None:
    broken = tmp_path / "qa.jsonl"
    broken.write_text('{"prompt": "a", "completion": "b"}\n{"prompt": "c"}\n')
    dataset = _validate(api, _upload(api, broken))
    assert dataset["status"] == "needs_review"
    fixed = tmp_path / "qa-fixed.jsonl"
    fixed.write_text('{"prompt": "a", "completion": "b"}\n{"prompt": "c", "completion": "d"}\n')
    with fixed.open("rb") as handle:
        again = api.post(f"/api/v1/datasets/{dataset['id']}/upload", files={"file": ("qa-fixed.jsonl", handle)})
    assert again.status_code == 202
    done = _validate(api, again.json())
    assert (
        done["status"] == "ready" and done["filename"] == "qa-fixed.jsonl" and done["versions"][0]["record_count"] == 2
    )
    revalidated = api.post(
        f"/api/v1/datasets/{dataset['id']}/validate",
        json={"record_format": "text", "splits": {"train": 1, "validation": 0, "test": 0}},
    )
    assert revalidated.status_code == 202
    bad = api.post(f"/api/v1/datasets/{dataset['id']}/validate", json={"record_format": "nonsense"})
    assert bad.status_code == 409  # still validating
    done = _validate(api, revalidated.json())
    assert done["record_format"] == "text" and done["status"] == "needs_review"  # no "text" field in these rows
    wrong = api.post(f"/api/v1/datasets/{dataset['id']}/validate", json={"record_format": "nonsense"})
    assert wrong.status_code == 422 and wrong.json()["error"]["field"] == "record_format"


def test_upload_limit_gives_413_and_leaves_no_file(api: Any, configure: Any, env: Any, tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from app.main import create_app

    configure(max_upload_bytes=1000)
    big = tmp_path / "big.jsonl"
    big.write_text('{"text": "' + "x" * 5000 + '"}\n')
    limited = TestClient(create_app())
    limited.headers.update(api.headers)
    with big.open("rb") as handle:
        response = limited.post("/api/v1/datasets", files={"file": ("big.jsonl", handle)})
    assert response.status_code == 413 and response.json()["error"]["code"] == "too_large"
    uploads = env.artifacts_dir / "uploads"
    assert not uploads.exists() or list(uploads.iterdir()) == []
    with session_scope() as session:
        assert session.query(Dataset).count() == 0


def test_too_many_form_fields_are_refused(api: Any, tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    path.write_text('{"text": "x"}\n')
    with path.open("rb") as handle:
        response = api.post(
            "/api/v1/datasets", files={"file": ("a.jsonl", handle)}, data={f"f{i}": "x" for i in range(50)}
        )
    assert response.status_code == 400


def test_another_users_dataset_is_404_on_every_route(api: Any, tmp_path: Path) -> None:
    path = tmp_path / "mine.jsonl"
    path.write_text('{"prompt": "a", "completion": "b"}\n')
    done = _validate(api, _upload(api, path))
    dataset_id, version_id = done["id"], done["versions"][0]["id"]
    token = csrf_of(api, "/models")
    api.post(
        "/api/v1/users",
        json={"email": "eve@example.com", "password": "eve-password-1"},
        headers={"X-CSRF-Token": token},
    )
    from fastapi.testclient import TestClient

    from app.main import create_app

    eve = TestClient(create_app())
    from tests.conftest import login

    login(eve, "eve@example.com", "eve-password-1")
    eve_token = csrf_of(eve, "/models")
    h = {"X-CSRF-Token": eve_token}
    for method, url in [
        ("get", f"/api/v1/datasets/{dataset_id}"),
        ("get", f"/api/v1/datasets/{dataset_id}/report"),
        ("post", f"/api/v1/datasets/{dataset_id}/import"),
        ("get", f"/api/v1/datasets/{dataset_id}/versions/{version_id}/records"),
        ("get", f"/api/v1/datasets/{dataset_id}/versions/{version_id}/download"),
        ("get", f"/datasets/{dataset_id}"),
        ("get", f"/datasets/{dataset_id}/_status"),
        ("post", f"/datasets/{dataset_id}/import"),
        ("get", f"/datasets/{dataset_id}/versions/{version_id}/records/1"),
    ]:
        response = getattr(eve, method)(url, headers=h)
        assert response.status_code == 404, (method, url, response.status_code)
    validate = eve.post(f"/api/v1/datasets/{dataset_id}/validate", json={}, headers=h)
    assert validate.status_code == 404
    with path.open("rb") as handle:
        assert (
            eve.post(
                f"/api/v1/datasets/{dataset_id}/upload", files={"file": ("x.jsonl", handle)}, headers=h
            ).status_code
            == 404
        )
    assert eve.get("/api/v1/datasets").json() == []
    assert api.get(f"/api/v1/datasets/{dataset_id}").json()["status"] == "ready"  # untouched


def test_dataset_page_shows_report_histogram_and_template_view(api: Any, ready_model: str) -> None:
    dataset = _validate(api, _upload(api, SHARED_DATASETS / "alpaca_seed_tasks.jsonl"))
    page = api.get(f"/datasets/{dataset['id']}")
    assert page.status_code == 200 and "data-histogram" in page.text and "What the model sees" in page.text
    view = api.get(f"/datasets/{dataset['id']}/versions/{dataset['versions'][0]['id']}/records/1")
    assert view.status_code == 200
    assert view.text.count('class="tok trained"') > 0 and "&lt;|im_start|&gt;" in view.text


def test_record_longer_than_the_models_context_is_reported(api: Any, ready_model: str, tmp_path: Path) -> None:
    path = tmp_path / "long.jsonl"
    long_answer = " ".join(["word"] * 3000)  # the tiny model's context is 2,048 tokens
    path.write_text(
        json.dumps({"prompt": "Write a lot.", "completion": long_answer})
        + "\n"
        + json.dumps({"prompt": "Short?", "completion": "Yes."})
        + "\n"
    )
    done = _validate(api, _upload(api, path, model_id=ready_model))
    assert done["status"] == "needs_review" and done["report"]["by_code"] == {"too_long": 1}
    issue = api.get(f"/api/v1/datasets/{done['id']}/report").json()["issues"][0]
    assert issue["line"] == 1 and "2048" in issue["message"].replace(",", "")


def test_validation_and_test_splits_from_their_own_files(api: Any, tmp_path: Path) -> None:
    def write(name: str, rows: list[tuple[str, str]], extra: str = "") -> Path:
        path = tmp_path / name
        path.write_text("".join(json.dumps({"prompt": p, "completion": c}) + "\n" for p, c in rows) + extra)
        return path

    main = write("train.jsonl", [(f"q{i}", f"a{i}") for i in range(40)])
    test = write("test.jsonl", [("t1", "x"), ("t2", "y")], extra='{"prompt": "t3"}\n')
    with main.open("rb") as m, test.open("rb") as t:
        response = api.post(
            "/api/v1/datasets",
            files={"file": ("train.jsonl", m), "test_file": ("test.jsonl", t)},
            data={"split_train": "0.8", "split_validation": "0.2", "split_test": "0.5"},
        )
    assert response.status_code == 202, response.text
    assert response.json()["split_files"] == {"test": "test.jsonl"}
    done = _validate(api, response.json())
    assert done["status"] == "needs_review"
    issues = api.get(f"/api/v1/datasets/{done['id']}/report").json()["issues"]
    assert [(i["source"], i["line"], i["code"]) for i in issues] == [("test", 3, "missing_field")]
    version = api.post(f"/api/v1/datasets/{done['id']}/import").json()
    assert version["split_counts"]["test"] == 2  # only the test file's records, none from the main file
    assert version["split_counts"].get("train", 0) + version["split_counts"].get("validation", 0) == 40
    assert version["options"]["split_files"] == {"test": "test.jsonl"}
    tests = api.get(f"/api/v1/datasets/{done['id']}/versions/{version['id']}/records", params={"split": "test"}).json()
    assert sorted((r["source_file"], r["data"]["messages"][0]["content"]) for r in tests["records"]) == [
        ("test", "t1"),
        ("test", "t2"),
    ]


def test_report_page_shows_the_column_mapping_and_text_split_and_both_change(api: Any, tmp_path: Path) -> None:
    qa = tmp_path / "qa.csv"
    qa.write_text('question,answer\n"What is 2+2?","4"\n"Capital of France?","Paris"\n')
    done = _validate(api, _upload(api, qa))
    assert done["status"] == "ready" and done["record_format"] == "prompt_completion"
    assert done["report"]["column_mapping"] == {"prompt": "question", "completion": "answer"}
    page = api.get(f"/datasets/{done['id']}").text
    assert (
        "Columns mapped automatically from their names" in page
        and "<code>prompt</code> ← <code>question</code>" in page
    )
    assert '<option value="question" selected>' in page  # the mapping form starts from what was detected

    notes = tmp_path / "notes.txt"
    notes.write_text("First note.\nSecond note.\nThird note.\n")
    text = _validate(api, _upload(api, notes))
    assert text["status"] == "ready" and text["report"]["text_split"] == "lines"
    assert text["versions"][0]["record_count"] == 3
    page = api.get(f"/datasets/{text['id']}").text
    assert "Plain text read as one record per line" in page and 'name="text_split"' in page
    # the user changes the choice: the whole file as one document
    again = api.post(f"/api/v1/datasets/{text['id']}/validate", json={"text_split": "document"})
    assert again.status_code == 202 and again.json()["text_split"] == "document"
    redone = _validate(api, again.json())
    assert redone["report"]["text_split"] == "document" and redone["versions"][0]["record_count"] == 1
    wrong = api.post(f"/api/v1/datasets/{text['id']}/validate", json={"text_split": "words"})
    assert wrong.status_code == 422 and "text_split" in wrong.text
