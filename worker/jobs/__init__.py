"""Parent-side job handlers: build the child's argv and apply its result to the database."""

from __future__ import annotations

import uuid
from typing import Any, Protocol

from sqlalchemy.orm import Session

from worker.jobs import (
    adapter_import,
    cleaning,
    dataset_validate,
    distillation,
    eval_run,
    evaluation,
    gguf_export,
    judging,
    merge,
    model_import,
    training,
)


class JobHandler(Protocol):
    def argv(self, run_id: uuid.UUID, params: dict[str, Any], attempt: int) -> list[str]: ...

    def on_success(self, session: Session, run_id: uuid.UUID, result: dict[str, Any]) -> None: ...


HANDLERS: dict[str, JobHandler] = {
    model_import.KIND: model_import.HANDLER,
    dataset_validate.KIND: dataset_validate.HANDLER,
    training.KIND: training.HANDLER,
    evaluation.KIND: evaluation.HANDLER,
    judging.KIND: judging.HANDLER,
    eval_run.KIND: eval_run.HANDLER,
    merge.KIND: merge.HANDLER,
    gguf_export.KIND: gguf_export.HANDLER,
    distillation.KIND: distillation.HANDLER,
    adapter_import.KIND: adapter_import.HANDLER,
    cleaning.KIND: cleaning.HANDLER,
    cleaning.COMMIT_KIND: cleaning.COMMIT_HANDLER,
}
