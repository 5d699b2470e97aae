"""The model card (README.md) that travels with an adapter zip, a merged export and `refinery adapters export`:
a Markdown template (templates/cards/model_card.md) filled with the job's lineage, metrics and spec."""

from __future__ import annotations

import json
from functools import lru_cache

import jinja2
from sqlalchemy.orm import Session

from app.basemodels.bundled import BUNDLED_ORIGIN
from app.basemodels.service import public_base
from app.core.ownership import referenced
from app.db.models import BaseModelRecord, Dataset, DatasetVersion, TrainingJob
from app.jobs.spec import TrainingSpec
from app.runs.service import required_run

CARD_METRICS = (
    "train_loss",
    "eval_loss",
    "base_eval_loss",
    "steps",
    "epochs",
    "trainable_parameters",
    "tokens_seen",
    "seconds",
)


@lru_cache
def _template() -> jinja2.Template:
    from app.core.templating import ROOT

    # Markdown, not HTML: nothing is escaped (the card is a downloaded file, never rendered in our pages)
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(ROOT / "templates" / "cards")),
        autoescape=False,  # noqa: S701
        keep_trailing_newline=True,
    )
    return env.get_template("model_card.md")


def model_card(session: Session, job: TrainingJob, *, merged: bool = False) -> str:
    model = referenced(session, BaseModelRecord, job.base_model_id)
    # an adapter uploaded rather than trained here has no dataset (the card says so)
    version = referenced(session, DatasetVersion, job.dataset_version_id) if job.dataset_version_id else None
    dataset = referenced(session, Dataset, version.dataset_id) if version else None
    run = required_run(session, job.run_id)  # every job has its run (an uploaded adapter's is a succeeded one)
    result = run.result or {}
    base_id, revision = public_base(model)
    return _template().render(
        job=job,
        model=model,
        base_id=base_id,
        revision=revision,
        bundled_origin=BUNDLED_ORIGIN if model.source == "bundled" else None,
        version=version,
        dataset=dataset,
        run=run,
        spec=TrainingSpec.model_validate(job.spec),
        spec_json=json.dumps(job.spec, indent=2),
        metrics=[(key, value) for key, value in result.items() if key in CARD_METRICS],
        merged=merged,
    )
