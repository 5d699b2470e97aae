"""Cleaning a dataset version: the child (worker/cleaning/run.py) writes the decisions; we keep the summary."""

from __future__ import annotations

import json
import sys
import uuid
from typing import Any

from sqlalchemy.orm import Session

from app.cleaning import service as cleaning_service
from app.datasets.storage import artifact_path
from app.db.models import Cleaning, DatasetVersion, Judge
from app.db.session import session_scope
from app.evaluation.judges import endpoint

KIND = cleaning_service.CLEAN_KIND


def _eval_sources(session: Session, cleaning: Cleaning) -> dict[str, str]:
    """The Parquet file of each eval set a contamination step names (its owner was checked at start)."""
    sources = {}
    for index, step in enumerate(cleaning.steps):
        if step["op"] == "contamination" and step["params"].get("version_id"):
            other = session.get(DatasetVersion, uuid.UUID(step["params"]["version_id"]))
            if other is None:
                raise ValueError("The eval set's dataset version has been deleted.")
            sources[str(index)] = str(artifact_path(other.storage_key))
    return sources


def _judges(session: Session, cleaning: Cleaning) -> dict[str, dict[str, Any]]:
    """Where each judge step's judge answers (its key is read by the child, not passed on the command line)."""
    found = {}
    for index, step in enumerate(cleaning.steps):
        if step["op"] == "judge":
            judge = session.get(Judge, uuid.UUID(step["params"]["judge_id"]))
            if judge is None:
                raise ValueError("The judge this recipe names has been deleted.")
            url, model = endpoint(judge)
            found[str(index)] = {
                "judge_id": str(judge.id),
                "local": judge.kind == "local",
                "url": url,
                "model": model,
                "timeout_s": judge.timeout_s,
            }
    return found


class CleaningHandler:
    def argv(self, run_id: uuid.UUID, params: dict[str, Any], attempt: int) -> list[str]:
        with session_scope() as session:
            cleaning = session.get(Cleaning, uuid.UUID(params["cleaning_id"]))
            version = session.get(DatasetVersion, cleaning.version_id) if cleaning else None
            if cleaning is None or version is None:
                raise ValueError("The cleaning or its dataset version has been deleted.")
            spec = {
                "source": str(artifact_path(version.storage_key)),
                "output_dir": str(artifact_path(cleaning.storage_key)),
                "steps": cleaning.steps,
                "salt": cleaning.id.hex,
                "eval_sources": _eval_sources(session, cleaning),
                "judges": _judges(session, cleaning),
            }
        return [sys.executable, "-m", "worker.cleaning.run", json.dumps(spec)]

    def on_success(self, session: Session, run_id: uuid.UUID, result: dict[str, Any]) -> None:
        cleaning_service.apply_result(session, run_id, result)


HANDLER = CleaningHandler()
