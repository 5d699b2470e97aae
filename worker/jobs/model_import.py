"""Importing a base model: the child converts/copies into the artifact store; we record the result."""

from __future__ import annotations

import json
import sys
import uuid
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.basemodels.service import IMPORT_KIND
from app.core.config import get_settings
from app.db.models import BaseModelRecord, ModelStatus

KIND = IMPORT_KIND


class ModelImportHandler:
    def argv(self, run_id: uuid.UUID, params: dict[str, Any], attempt: int) -> list[str]:
        from app.db.session import session_scope

        with session_scope() as session:
            model = session.get(BaseModelRecord, uuid.UUID(params["model_id"]))
            if model is None:
                raise ValueError("The model this import was for has been deleted.")
            spec = {
                "source": model.source,
                "source_ref": model.source_ref,
                "revision": model.revision,
                "dest": str(get_settings().artifacts_dir / "models" / model.id.hex),
                "hub_endpoint": get_settings().hub_endpoint,
                "license": model.license,
            }
        return [sys.executable, "-m", "worker.training.model_import", json.dumps(spec)]

    def on_success(self, session: Session, run_id: uuid.UUID, result: dict[str, Any]) -> None:
        model = session.scalar(select(BaseModelRecord).where(BaseModelRecord.import_run_id == run_id))
        if model is None:
            return
        model.status = ModelStatus.ready
        model.storage_key = f"models/{model.id.hex}"
        model.architecture = result.get("architecture")
        model.num_parameters = result.get("num_parameters")
        model.context_length = result.get("context_length")
        model.chat_template = result.get("chat_template")
        model.size_bytes = result.get("size_bytes")
        model.license = model.license or result.get("license")
        model.error_message = None


HANDLER = ModelImportHandler()
