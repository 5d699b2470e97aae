"""Eval runs: the child (worker/evaluation/eval_run.py) grades the items; the counts are copied to the row."""

from __future__ import annotations

import json
import sys
import uuid
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.datasets.storage import artifact_path
from app.db.models import EvalDefinition, EvalRun
from app.db.session import session_scope
from app.evaluation.evals import EVAL_RUN_KIND

KIND = EVAL_RUN_KIND


class EvalRunHandler:
    def argv(self, run_id: uuid.UUID, params: dict[str, Any], attempt: int) -> list[str]:
        with session_scope() as session:
            eval_run = session.get(EvalRun, uuid.UUID(params["eval_run_id"]))
            definition = session.get(EvalDefinition, eval_run.eval_id) if eval_run else None
            if eval_run is None or definition is None:
                raise ValueError("The eval or this run of it has been deleted.")
            spec = {"folder": str(artifact_path(eval_run.storage_key)), "criteria": definition.testing_criteria}
        return [sys.executable, "-m", "worker.evaluation.eval_run", json.dumps(spec)]

    def on_success(self, session: Session, run_id: uuid.UUID, result: dict[str, Any]) -> None:
        eval_run = session.scalar(select(EvalRun).where(EvalRun.run_id == run_id))
        if eval_run is not None:
            eval_run.summary = result


HANDLER = EvalRunHandler()
