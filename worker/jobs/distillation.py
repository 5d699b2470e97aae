"""Distillation: the child (worker/evaluation/distill.py) asks the teacher; the answers become stored completions
(model ``teacher:<name>``, metadata ``distillation=<run>``) to review on the Traffic page."""

from __future__ import annotations

import json
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from app.datasets.storage import artifact_path
from app.db.models import DatasetVersion, Judge, Run, StoredCompletion
from app.db.session import session_scope
from app.evaluation.judges import endpoint
from app.traffic.distill import DISTILL_KIND, teacher_model

KIND = DISTILL_KIND


class DistillationHandler:
    def argv(self, run_id: uuid.UUID, params: dict[str, Any], attempt: int) -> list[str]:
        with session_scope() as session:
            judge = session.get(Judge, uuid.UUID(params["judge_id"]))
            version = session.get(DatasetVersion, uuid.UUID(params["version_id"]))
            if judge is None or version is None:
                raise ValueError("The teacher or the dataset version has been deleted.")
            url, model = endpoint(judge)
            spec = {
                "judge_id": str(judge.id),
                "local": judge.kind == "local",
                "url": url,
                "model": model,
                "timeout_s": judge.timeout_s,
                "records_path": str(artifact_path(version.storage_key)),
                "limit": params["limit"],
                "max_tokens": params["max_tokens"],
                "temperature": params["temperature"],
                "output_dir": str(artifact_path(f"distillations/{run_id.hex}")),
            }
        return [sys.executable, "-m", "worker.evaluation.distill", json.dumps(spec)]

    def on_success(self, session: Session, run_id: uuid.UUID, result: dict[str, Any]) -> None:
        run = session.get(Run, run_id)
        judge = session.get(Judge, uuid.UUID(run.params["judge_id"])) if run else None
        if run is None or run.owner_id is None:
            return
        name = teacher_model(judge.name if judge else "?")
        now = datetime.now(UTC)
        kept = 0
        for line in Path(result["answers_path"]).read_text(encoding="utf-8").splitlines():
            try:
                answer = json.loads(line)
            except ValueError:
                continue  # half-written by a killed attempt; that prompt was answered again
            if "content" not in answer:
                continue  # a failed call: counted in the result, never an answer
            session.add(
                StoredCompletion(
                    owner_id=run.owner_id,
                    completion_id=f"chatcmpl-{uuid.uuid4().hex[:24]}",
                    created_at=now,
                    model=name,
                    messages=answer["messages"],
                    answer=answer["content"],
                    finish_reason=answer.get("finish_reason", "stop"),
                    usage=answer.get("usage") or None,
                    request={"max_tokens": run.params["max_tokens"], "temperature": run.params["temperature"]},
                    completion_metadata={"distillation": run_id.hex[:12], "record": str(answer["id"])[:200]},
                )
            )
            kept += 1
        result["answers"] = kept


HANDLER = DistillationHandler()
