"""Validating an upload: the child reads and stages it; we record the report (and version 1 when clean)."""

from __future__ import annotations

import json
import sys
import uuid
from typing import Any

from sqlalchemy.orm import Session

from app.basemodels.service import get_model_unchecked
from app.datasets import service as datasets
from app.datasets.storage import artifact_path
from app.db.models import Dataset, ModelStatus, Upload
from app.db.session import session_scope

KIND = datasets.VALIDATE_KIND


class DatasetValidateHandler:
    def argv(self, run_id: uuid.UUID, params: dict[str, Any], attempt: int) -> list[str]:
        with session_scope() as session:
            dataset = session.get(Dataset, uuid.UUID(params["dataset_id"]))
            if dataset is None:
                raise ValueError("The dataset this validation was for has been deleted.")
            upload = session.get(Upload, dataset.upload_id)
            assert upload is not None
            spec: dict[str, Any] = {
                "upload_path": str(artifact_path(upload.storage_key)),
                "filename": upload.filename,
                "file_type": dataset.file_type,
                "record_format": dataset.format_override,
                "mapping": dataset.column_mapping,
                "text_split": dataset.text_split,
                "split_ratios": dataset.split_ratios,
                "seed": dataset.split_seed,
                "dest": str(artifact_path(datasets.staged_records_key(dataset))),
                "split_files": [
                    {"path": str(artifact_path(u.storage_key)), "filename": u.filename, "split": split}
                    for split, u in datasets.split_uploads(session, dataset).items()
                ],
            }
            model = get_model_unchecked(session, dataset.model_id) if dataset.model_id else None
            if model is not None and model.status == ModelStatus.ready and model.storage_key:
                spec |= {
                    "model_dir": str(artifact_path(model.storage_key)),
                    "chat_template": model.chat_template,
                    "context_length": model.context_length,
                }
        return [sys.executable, "-m", "worker.ingest", json.dumps(spec)]

    def on_success(self, session: Session, run_id: uuid.UUID, result: dict[str, Any]) -> None:
        datasets.apply_validation(session, run_id, result)


HANDLER = DatasetValidateHandler()
