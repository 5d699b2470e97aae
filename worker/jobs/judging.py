"""Judging: the child (worker/evaluation/judge.py) asks the judge; the summary is copied to the row."""

from __future__ import annotations

import json
import sys
import uuid
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.datasets.storage import artifact_path
from app.db.models import Evaluation, Judge, Judgement
from app.db.session import session_scope
from app.evaluation.judges import JUDGE_KIND, endpoint

KIND = JUDGE_KIND


class JudgingHandler:
    def argv(self, run_id: uuid.UUID, params: dict[str, Any], attempt: int) -> list[str]:
        with session_scope() as session:
            judgement = session.get(Judgement, uuid.UUID(params["judgement_id"]))
            evaluation = session.get(Evaluation, judgement.evaluation_id) if judgement else None
            judge = session.get(Judge, judgement.judge_id) if judgement and judgement.judge_id else None
            if judgement is None or evaluation is None or judge is None:
                raise ValueError("The judgement, its evaluation or its judge has been deleted.")
            url, model = endpoint(judge)
            spec = {
                "judge_id": str(judge.id),
                "judge_name": judge.name,
                "local": judge.kind == "local",
                "url": url,
                "model": model,
                "timeout_s": judge.timeout_s,
                "samples_path": str(artifact_path(f"{evaluation.storage_key}/samples.jsonl")),
                "output_dir": str(artifact_path(judgement.storage_key)),
            }
        return [sys.executable, "-m", "worker.evaluation.judge", json.dumps(spec)]

    def on_success(self, session: Session, run_id: uuid.UUID, result: dict[str, Any]) -> None:
        judgement = session.scalar(select(Judgement).where(Judgement.run_id == run_id))
        if judgement is not None:
            judgement.summary = result


HANDLER = JudgingHandler()
