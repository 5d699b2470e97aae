"""Distillation: a teacher (a stand-in OpenAI-compatible server on loopback, set up under Judges — the edge we may
fake) answers a dataset's prompts in a background run; answers arrive on Traffic as stored completions, a failed
call is counted and never stored, tokens are summed, a new attempt goes on where the last one stopped, and the
answers make a dataset to train a student on."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import csrf_of, login
from worker import lifecycle

pytestmark = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)


class Teacher:
    """Answers "TEACHER SAYS: <the question>" with token counts; a question containing FAIL gets HTTP 500."""

    def __init__(self) -> None:
        self.asked: list[str] = []
        teacher = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                question = body["messages"][-1]["content"]
                teacher.asked.append(question)
                if "FAIL" in question:
                    payload, status = {"error": {"message": "overloaded"}}, 500
                else:
                    message = {"role": "assistant", "content": f"TEACHER SAYS: {question}"}
                    usage = {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}
                    choice = {"index": 0, "message": message, "finish_reason": "stop"}
                    payload, status = {"choices": [choice], "usage": usage}, 200
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"


def test_a_teacher_answers_a_datasets_prompts_for_review(
    client: Any, setup: dict[str, Any], loopback_judges: None, tmp_path: Path
) -> None:
    teacher = Teacher()
    try:
        judge = client.post(
            "/api/v1/judges", json={"name": "big teacher", "url": teacher.url, "model": "big", "timeout_s": 5}
        ).json()
        questions = [f"Question {i}?" for i in range(9)] + ["Please FAIL here."]
        rows = [
            {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": "x"}]} for q in questions
        ]
        path = tmp_path / "questions.jsonl"
        path.write_text("\n".join(json.dumps(r) for r in rows))
        with path.open("rb") as handle:
            whole = {"split_train": "1", "split_validation": "0", "split_test": "0"}  # every prompt in train
            dataset = client.post("/api/v1/datasets", files={"file": ("questions.jsonl", handle)}, data=whole).json()
        lifecycle.execute(dataset["validation_run"]["id"])
        version = client.get(f"/api/v1/datasets/{dataset['id']}").json()["versions"][0]
        train = version["split_counts"]["train"]
        body = {"judge_id": judge["id"], "dataset_version_id": version["id"], "max_tokens": 64}
        run = client.post("/api/v1/traffic/distillations", json=body)
        assert run.status_code == 202, run.text

        # an earlier attempt answered one prompt and was killed in the middle of the next line
        import uuid

        from app.datasets.storage import artifact_path
        from app.db.models import DatasetVersion
        from app.db.session import session_scope
        from worker.evaluation.distill import prompts

        with session_scope() as session:
            stored = session.get(DatasetVersion, uuid.UUID(version["id"]))
            assert stored is not None
            first = prompts(str(artifact_path(stored.storage_key)), 100)[0]
        out = artifact_path("distillations") / run.json()["id"].replace("-", "")
        out.mkdir(parents=True)
        earlier = {"id": first["id"], "messages": first["messages"], "content": "EARLIER ANSWER", "usage": {}}
        (out / "answers.jsonl").write_text(json.dumps(earlier) + '\n{"id": "half-writ')
        lifecycle.execute(run.json()["id"])
        finished = client.get(f"/api/v1/runs/{run.json()['id']}").json()
        assert finished["status"] == "succeeded", finished
        result = finished["result"]
        assert train == 10 and result["prompts"] == 10 and result["failures"] == {"http": 1}
        assert result["answers"] == 9  # the failed call is counted, never stored
        assert len(teacher.asked) == 9 and first["messages"][-1]["content"] not in teacher.asked  # not asked again
        assert result["tokens"] == {"prompt_tokens": 7 * 8, "completion_tokens": 3 * 8}

        # on Traffic, to review; then a dataset to train a student on
        answers = client.get("/api/v1/traffic", params={"model": "teacher:big teacher"}).json()
        assert len(answers) == result["answers"]
        assert all(a["completion"]["metadata"]["distillation"] for a in answers)
        assert {a["completion"]["choices"][0]["message"]["content"].split(":")[0] for a in answers} <= {
            "TEACHER SAYS",
            "EARLIER ANSWER",
        }
        page = client.get("/traffic").text
        assert "big teacher" in page and "Review them" in page
        made = client.post("/api/v1/traffic/datasets", json={"model": "teacher:big teacher", "name": "distilled"})
        assert made.status_code == 201 and made.json()["records"] == result["answers"]

        # another user cannot distil from someone else's dataset
        client.post("/api/v1/users", json={"email": "bob@example.com", "password": "bob-password-1"})
        client.post("/logout", data={"csrf_token": client.headers["X-CSRF-Token"]})
        del client.headers["X-CSRF-Token"]
        login(client, "bob@example.com", "bob-password-1")
        client.headers["X-CSRF-Token"] = csrf_of(client, "/models")
        assert client.post("/api/v1/traffic/distillations", json=body).status_code == 404
        assert client.get("/api/v1/traffic").json() == []
    finally:
        teacher.server.shutdown()
