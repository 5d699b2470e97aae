"""GGUF exports of an adapter: the merged model in f16, q8_0 or q4_0 with an Ollama Modelfile, or the LoRA as a
GGUF LoRA file. Each is a background run (worker/export/gguf_export.py); the files live under the job's
``gguf/<format>/`` and are removed with the adapter."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.adapters.service import MERGEABLE, AdapterRow
from app.core.errors import Conflict, InvalidInput, NotFound
from app.core.i18n import N_, _
from app.datasets.storage import artifact_path
from app.db.models import Run, TrainingJob, User
from app.jobs import files as job_files
from app.jobs.card import model_card
from app.jobs.checkpoints import COMPLETE_MARKER
from app.jobs.spec import Adapter
from app.runs import service as runs

GGUF_KIND = "gguf_export"
FORMATS = ("f16", "q8_0", "q4_0", "lora")
FORMAT_LABELS = {
    "f16": N_("f16 — full precision, the largest file"),
    "q8_0": N_("q8_0 — 8-bit, about half the size, near-identical answers"),
    "q4_0": N_("q4_0 — 4-bit, about a third of the size, answers change on small models"),
    "lora": N_("LoRA — the adapter alone, for llama.cpp --lora or Ollama's ADAPTER over the base model's GGUF"),
}
ARCHITECTURES = {"LlamaForCausalLM", "Qwen2ForCausalLM"}  # what worker/export/gguf_write.py writes
WHOLE_MODELS = {Adapter.full.value, Adapter.freeze.value}


def gguf_dir(job: TrainingJob, fmt: str) -> Path:
    return artifact_path(f"{job.storage_key}/gguf/{fmt}")


def ready(job: TrainingJob, fmt: str) -> dict[str, Any] | None:
    """The finished export's facts (file, size, tensor types), or None."""
    marker = gguf_dir(job, fmt) / COMPLETE_MARKER
    if not marker.is_file():
        return None
    return dict(json.loads(marker.read_text()))


def refusal(row: AdapterRow, fmt: str) -> str | None:
    """Why this adapter cannot be exported in this format, or None when it can."""
    if fmt not in FORMATS:
        return _("GGUF exports are %(formats)s; not %(format)s.", formats=", ".join(FORMATS), format=fmt[:20])
    if row.model.architecture not in ARCHITECTURES:
        return _(
            "GGUF export writes Llama and Qwen2 models; this base model is %(architecture)s.",
            architecture=row.model.architecture or "?",
        )
    adapter = row.job.spec.get("adapter")
    if fmt == "lora":
        if adapter not in (Adapter.lora.value, Adapter.qlora.value) or row.job.spec.get("use_dora"):
            return _("Only a plain LoRA (not DoRA, IA3 or a full fine-tune) is written as a GGUF LoRA file.")
        return None
    if adapter not in MERGEABLE and adapter not in WHOLE_MODELS:
        return _("A %(adapter)s adapter cannot be folded into the weights, so it has no GGUF model.", adapter=adapter)
    return None


def export_runs(session: Session, job: TrainingJob) -> dict[str, Run]:
    """Each format's latest export run of this job."""
    stmt = select(Run).where(Run.kind == GGUF_KIND, Run.owner_id == job.owner_id).order_by(Run.created_at.desc())
    latest: dict[str, Run] = {}
    for run in session.scalars(stmt):
        if (run.params or {}).get("job_id") == str(job.id):
            latest.setdefault(str(run.params.get("format")), run)
    return latest


@dataclass(frozen=True)
class ExportState:
    format: str
    refused: str | None  # why this format is not offered for the adapter
    facts: dict[str, Any]  # the finished export's file, size, tensor types; empty until then
    run: Run | None  # the latest export run

    @property
    def live(self) -> bool:
        return self.run is not None and not self.run.status.is_final


def states(session: Session, row: AdapterRow) -> list[ExportState]:
    """Each format's export of the adapter, as the page and the API show it."""
    latest = export_runs(session, row.job)
    return [ExportState(f, refusal(row, f), ready(row.job, f) or {}, latest.get(f)) for f in FORMATS]


def live(session: Session, job: TrainingJob) -> list[Run]:
    return [run for run in export_runs(session, job).values() if not run.status.is_final]


def start(session: Session, *, user: User, row: AdapterRow, fmt: str) -> Run:
    """Export as a background run; a running export of the same format is returned as it is."""
    reason = refusal(row, fmt)
    if reason:
        raise InvalidInput(reason, field="format")
    running = export_runs(session, row.job).get(fmt)
    if running is not None and not running.status.is_final:
        return running
    if ready(row.job, fmt):
        raise Conflict(_("The %(format)s GGUF is ready already; download it.", format=fmt))
    params = {"job_id": str(row.job.id), "format": fmt}
    return runs.create_run(session, kind=GGUF_KIND, owner=user, params=params, queue="gpu")


def _finished(row: AdapterRow, fmt: str) -> dict[str, Any]:
    if fmt not in FORMATS:
        raise NotFound(_("No such GGUF format."))
    facts = ready(row.job, fmt)
    if facts is None:
        raise Conflict(
            _("Export the %(format)s GGUF first; the download is ready when the run has finished.", format=fmt)
        )
    return facts


def file_path(row: AdapterRow, fmt: str) -> Path:
    """The .gguf file itself, for llama.cpp and LM Studio."""
    return gguf_dir(row.job, fmt) / str(_finished(row, fmt)["file"])


def modelfile(row: AdapterRow, fmt: str) -> str:
    facts = _finished(row, fmt)
    path = gguf_dir(row.job, fmt) / "Modelfile"
    if not facts.get("modelfile") or not path.is_file():
        raise NotFound(_("A GGUF LoRA file has no Modelfile of its own; use it with the base model's GGUF."))
    return path.read_text(encoding="utf-8")


def archive(session: Session, row: AdapterRow, fmt: str) -> Iterator[bytes]:
    """The .gguf, the Modelfile and the model card as one zip: unzip, then ``ollama create NAME -f Modelfile``."""
    _finished(row, fmt)
    return job_files.directory_zip(gguf_dir(row.job, fmt), model_card(session, row.job, merged=fmt != "lora"))
