"""Several jobs side by side: their loss curves, the spec fields that differ, the final metrics."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from app.core.i18n import N_, gettext
from app.db.models import Run, TrainingJob
from app.jobs.files import metrics
from app.jobs.service import job_label, job_run
from app.jobs.spec import TrainingSpec

COMPARED_RESULTS = ("train_loss", "eval_loss", "steps", "epochs", "tokens_seen", "seconds", "trainable_parameters")
RESULT_LABELS = {
    "train_loss": N_("Training loss"),
    "eval_loss": N_("Validation loss"),
    "steps": N_("Steps"),
    "epochs": N_("Epochs"),
    "tokens_seen": N_("Tokens trained"),
    "seconds": N_("Training time (s)"),
    "trainable_parameters": N_("Trainable parameters"),
}


def row_labels() -> dict[str, str]:
    """What the comparison's rows are called, in the reader's language: results, then spec fields."""
    from app.jobs.forms import LABELS

    return {key: gettext(label) for key, label in (LABELS | RESULT_LABELS).items()}


@dataclass(frozen=True)
class Curve:
    name: str
    loss: list[list[float]]  # [step, value] pairs, as the chart draws them
    eval_loss: list[list[float]]


@dataclass(frozen=True)
class Comparison:
    jobs: list[TrainingJob]
    runs: list[Run]
    differing: list[tuple[str, list[Any]]]  # a spec field and its value in each job
    models: list[str]
    datasets: list[str]
    results: list[tuple[str, list[Any]]]  # a result (COMPARED_RESULTS) and its value in each job
    curves: list[Curve]

    @property
    def same_model(self) -> bool:
        return len(set(self.models)) == 1

    @property
    def same_dataset(self) -> bool:
        return len(set(self.datasets)) == 1


def compare(session: Session, jobs: list[TrainingJob]) -> Comparison:
    specs = [TrainingSpec.model_validate(job.spec).model_dump(mode="json") for job in jobs]
    differing = [name for name in TrainingSpec.model_fields if len({json.dumps(s[name]) for s in specs}) > 1]
    labels = [job_label(session, job) for job in jobs]
    curves = []
    for job in jobs:
        rows = metrics(job)
        curves.append(
            Curve(
                name=job.name,
                loss=[[r["step"], r["loss"]] for r in rows if "loss" in r],
                eval_loss=[[r["step"], r["eval_loss"]] for r in rows if "eval_loss" in r],
            )
        )
    runs = [job_run(session, job) for job in jobs]
    results = [run.result or {} for run in runs]
    return Comparison(
        jobs=jobs,
        runs=runs,
        differing=[(name, [s[name] for s in specs]) for name in differing],
        models=[label.model for label in labels],
        datasets=[label.dataset for label in labels],
        results=[(key, [r.get(key) for r in results]) for key in COMPARED_RESULTS],
        curves=curves,
    )
