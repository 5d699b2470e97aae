"""Cleaning a dataset version: the child (worker/cleaning/run.py) writes the decisions; we keep the summary.
Committing it: the child (worker/cleaning/commit.py) writes the records; we add the new version."""

from __future__ import annotations

import json
import sys
import uuid
from typing import Any

from sqlalchemy.orm import Session

from app.cleaning import service as cleaning_service
from app.cleaning.recipe import needs_names, needs_tokens
from app.core.config import get_settings
from app.datasets.storage import artifact_path
from app.db.models import Cleaning, Dataset, DatasetVersion, Judge
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


def _cleaning_of(session: Session, params: dict[str, Any]) -> tuple[Cleaning, DatasetVersion, Dataset]:
    cleaning = session.get(Cleaning, uuid.UUID(params["cleaning_id"]))
    version = session.get(DatasetVersion, cleaning.version_id) if cleaning else None
    dataset = session.get(Dataset, version.dataset_id) if version else None
    if cleaning is None or version is None or dataset is None:
        raise ValueError("The cleaning or its dataset version has been deleted.")
    return cleaning, version, dataset


class CleaningHandler:
    def argv(self, run_id: uuid.UUID, params: dict[str, Any], attempt: int) -> list[str]:
        with session_scope() as session:
            cleaning, version, dataset = _cleaning_of(session, params)
            spec: dict[str, Any] = {
                "source": str(artifact_path(version.storage_key)),
                "output_dir": str(artifact_path(cleaning.storage_key)),
                "steps": cleaning.steps,
                "salt": cleaning.id.hex,
                "eval_sources": _eval_sources(session, cleaning),
                "judges": _judges(session, cleaning),
                "regex_timeout": get_settings().user_regex_timeout_seconds,
            }
            if needs_tokens(cleaning.steps):
                tokenizer = cleaning_service.tokenizer_spec(session, dataset)
                if tokenizer is None:
                    raise ValueError("The dataset's base model, which counts tokens, is gone or not ready.")
                spec["tokenizer"] = tokenizer
            if needs_names(cleaning.steps):
                spec["ner_model"] = str(get_settings().ner_model or "")
        return [sys.executable, "-m", "worker.cleaning.run", json.dumps(spec)]

    def on_success(self, session: Session, run_id: uuid.UUID, result: dict[str, Any]) -> None:
        cleaning_service.apply_result(session, run_id, result)


HANDLER = CleaningHandler()
COMMIT_KIND = cleaning_service.COMMIT_KIND


class CommitHandler:
    def argv(self, run_id: uuid.UUID, params: dict[str, Any], attempt: int) -> list[str]:
        with session_scope() as session:
            cleaning, version, dataset = _cleaning_of(session, params)
            spec = {
                "source": str(artifact_path(version.storage_key)),
                "cleaning_dir": str(artifact_path(cleaning.storage_key)),
                "overrides_file": params["overrides_file"],
                "tokenizer": cleaning_service.tokenizer_spec(session, dataset),
            }
        return [sys.executable, "-m", "worker.cleaning.commit", json.dumps(spec)]

    def on_success(self, session: Session, run_id: uuid.UUID, result: dict[str, Any]) -> None:
        cleaning_service.apply_commit(session, run_id, result)


COMMIT_HANDLER = CommitHandler()
