"""What a job writes to the artifact store: its metrics log, its checkpoints, the final adapter (and a
directory zipped for download). Reads files only; the job's state is in app/jobs/service.py."""

from __future__ import annotations

import json
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.datasets.storage import artifact_path
from app.db.models import TrainingJob
from app.jobs.checkpoints import COMPLETE_MARKER, complete_checkpoints


def has_metrics(job: TrainingJob) -> bool:
    """Whether the job logged anything (without reading the log)."""
    path = artifact_path(f"{job.storage_key}/metrics.jsonl")
    return path.is_file() and path.stat().st_size > 0


def metrics(job: TrainingJob, *, after_step: int = -1) -> list[dict[str, Any]]:
    """Logged rows after a step (step 0 holds the evaluation before training); a resumed attempt re-logs
    steps after its checkpoint, so the last row wins. Rows stay as logged: their keys are the trainer's."""
    path = artifact_path(f"{job.storage_key}/metrics.jsonl")
    if not path.is_file():
        return []
    by_step: dict[tuple[int, bool], dict[str, Any]] = {}
    with path.open() as handle:
        for line in handle:
            try:
                row = json.loads(line)
            except ValueError:
                continue  # a line being written right now
            if isinstance(row, dict) and row.get("step", 0) > after_step:
                by_step[(row["step"], "eval_loss" in row)] = row
    return [by_step[key] for key in sorted(by_step)]


@dataclass(frozen=True)
class Checkpoint:
    name: str
    step: int
    loss: float | None
    eval_loss: float | None
    size_bytes: int


def checkpoints(job: TrainingJob) -> list[Checkpoint]:
    """The job's complete checkpoints (a checkpoint being written, or cut off by a kill, is not listed),
    each with the metrics logged at its step."""
    logged = metrics(job)
    rows = {row["step"]: row for row in logged if "loss" in row}
    evals = {row["step"]: row["eval_loss"] for row in logged if "eval_loss" in row}
    return [
        Checkpoint(
            name=path.name,
            step=step,
            loss=rows.get(step, {}).get("loss"),
            eval_loss=evals.get(step),
            size_bytes=sum(p.stat().st_size for p in path.rglob("*") if p.is_file()),
        )
        for step, path in complete_checkpoints(artifact_path(f"{job.storage_key}/checkpoints"))
    ]


def final_dir(job: TrainingJob) -> Path:
    return artifact_path(f"{job.storage_key}/final")


def directory_zip(directory: Path, card: str, *, base: tuple[str, str | None] | None = None) -> Iterator[bytes]:
    """A directory's safetensors and configuration (never pickle files) and the model card, as a zip streamed
    from a temporary file: full fine-tuning weights can be gigabytes. With ``base`` (name or hub id, revision),
    the adapter_config.json inside names that base instead of the path the trainer loaded it from."""
    import tempfile

    files = [
        p
        for p in sorted(directory.rglob("*"))
        if p.is_file()
        and p.name not in ("README.md", COMPLETE_MARKER)
        and p.suffix not in (".bin", ".pt", ".pth", ".pkl")
    ]

    def chunks() -> Iterator[bytes]:
        with tempfile.TemporaryFile() as spool:
            with zipfile.ZipFile(spool, "w", compression=zipfile.ZIP_DEFLATED) as archive:
                for path in files:
                    name = path.relative_to(directory).as_posix()
                    if base is not None and name == "adapter_config.json":
                        archive.writestr(name, with_base(path, base))
                    else:
                        archive.write(path, name)
                archive.writestr("README.md", card)
            spool.seek(0)
            while block := spool.read(1024 * 1024):
                yield block

    return chunks()


def with_base(config_path: Path, base: tuple[str, str | None]) -> str:
    """An adapter_config.json naming ``base`` (name or hub id, revision) as the model it adapts."""
    config = json.loads(config_path.read_text())
    config["base_model_name_or_path"], revision = base
    if revision:
        config["revision"] = revision
    return json.dumps(config, indent=2)


def tensorboard_dir(job: TrainingJob) -> Path:
    """TensorBoard event files, written during training beside the checkpoints (``tensorboard --logdir``)."""
    return artifact_path(f"{job.storage_key}/tensorboard")


def tensorboard_zip(job: TrainingJob) -> bytes | None:
    """The event files of every attempt as a zip, or None before the first step was logged."""
    import io

    events = sorted(p for p in tensorboard_dir(job).glob("events.out.tfevents.*") if p.is_file())
    if not events:
        return None
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in events:
            archive.write(path, f"{job.name or 'job'}/{path.name}")
    return buffer.getvalue()
