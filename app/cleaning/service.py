"""Cleaning a dataset version: recipes, runs, the decisions they made, the user's overrides, and committing
the result as a new immutable version whose options record the recipe, the run and every override."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from app.cleaning.recipe import DEFAULT_RECIPE, needs_names, needs_tokens, validate_steps
from app.core.config import get_settings
from app.core.errors import Conflict, InvalidInput, NotFound
from app.core.i18n import _
from app.core.ownership import get_owned
from app.datasets import service as datasets
from app.datasets.storage import artifact_path
from app.datasets.template import renderer_for
from app.db.models import (
    BaseModelRecord,
    Cleaning,
    CleaningOverride,
    CleaningRecipe,
    Dataset,
    DatasetVersion,
    Judge,
    ModelStatus,
    Run,
    RunStatus,
    User,
)
from app.jobs import service as jobs
from app.runs import service as runs

CLEAN_KIND = "cleaning"
COMMIT_KIND = "cleaning_commit"
ACTIONS = ("keep", "drop", "original", "default")
DEFAULT_NAME = "default"
PAGE_SIZE = 20


# --- recipes ----------------------------------------------------------------------------------------------


def list_recipes(session: Session, *, user: User) -> list[CleaningRecipe]:
    stmt = select(CleaningRecipe).where(CleaningRecipe.owner_id == user.id).order_by(CleaningRecipe.name)
    return list(session.scalars(stmt))


def save_recipe(session: Session, *, user: User, name: str, steps: Any) -> CleaningRecipe:
    """Save (or replace) a named recipe; the steps are validated and stored with every parameter."""
    name = name.strip()
    if not name or len(name) > 100:
        raise InvalidInput(_("Give the recipe a name of 1 to 100 characters."), field="name")
    checked = validate_steps(steps)
    recipe = session.scalar(
        select(CleaningRecipe).where(CleaningRecipe.owner_id == user.id, CleaningRecipe.name == name)
    )
    if recipe is None:
        recipe = CleaningRecipe(owner_id=user.id, name=name, steps=checked)
        session.add(recipe)
    else:
        recipe.steps = checked
    session.flush()
    return recipe


def get_recipe(session: Session, recipe_id: uuid.UUID, *, user: User) -> CleaningRecipe:
    return get_owned(session, CleaningRecipe, recipe_id, user=user, message=_("No such recipe."))


def delete_recipe(session: Session, recipe: CleaningRecipe) -> None:
    session.delete(recipe)
    session.flush()


# --- runs -------------------------------------------------------------------------------------------------


def start_cleaning(
    session: Session,
    *,
    user: User,
    version_id: uuid.UUID,
    steps: Any = None,
    recipe_id: uuid.UUID | None = None,
) -> Cleaning:
    """Run a recipe over a version: the given steps, a saved recipe, or the default recipe."""
    _dataset, version = jobs.owned_version(session, version_id, user=user)
    recipe = get_recipe(session, recipe_id, user=user) if recipe_id else None
    if steps is not None:
        checked = validate_steps(steps)
        name = recipe.name if recipe else DEFAULT_NAME if checked == validate_steps(DEFAULT_RECIPE) else _("custom")
    elif recipe is not None:
        checked, name = validate_steps(recipe.steps), recipe.name
    else:
        checked, name = validate_steps(DEFAULT_RECIPE), DEFAULT_NAME
    for index, step in enumerate(checked):  # an eval set named by a contamination step must be the user's
        if step["op"] == "contamination" and step["params"]["version_id"]:
            try:
                eval_id = uuid.UUID(step["params"]["version_id"])
            except ValueError as exc:
                raise InvalidInput(
                    _("Step %(n)s: the eval set's version id is not valid.", n=index + 1),
                    field=f"steps.{index}.version_id",
                ) from exc
            jobs.owned_version(session, eval_id, user=user)
            if eval_id == version.id:
                raise InvalidInput(
                    _(
                        "Step %(n)s: the eval set is the version being cleaned; check against its test split instead.",
                        n=index + 1,
                    ),
                    field=f"steps.{index}.version_id",
                )
    if needs_tokens(checked) and tokenizer_spec(session, _dataset) is None:
        index = next(i for i, s in enumerate(checked) if needs_tokens([s]))
        raise InvalidInput(
            _(
                "Step %(n)s: a length in tokens is counted with the dataset's base model, and this dataset has none "
                "ready; choose one on the dataset page, or bound the length in words.",
                n=index + 1,
            ),
            field=f"steps.{index}.min_tokens",
        )
    problem = ner_model_problem(get_settings().ner_model) if needs_names(checked) else None
    if problem:
        index = next(i for i, s in enumerate(checked) if needs_names([s]))
        raise InvalidInput(_("Step %(n)s: %(problem)s", n=index + 1, problem=problem), field=f"steps.{index}.names")
    for index, step in enumerate(checked):  # a judge step's judge must exist (judges are shared)
        if step["op"] == "judge":
            try:
                found = session.get(Judge, uuid.UUID(step["params"]["judge_id"]))
            except ValueError:
                found = None
            if found is None:
                raise InvalidInput(
                    _("Step %(n)s: no such judge; an administrator sets judges up.", n=index + 1),
                    field=f"steps.{index}.judge_id",
                )
    cleaning = Cleaning(
        owner_id=user.id,
        version_id=version.id,
        recipe_id=recipe.id if recipe else None,
        recipe_name=name,
        steps=checked,
        storage_key="",
    )
    session.add(cleaning)
    session.flush()
    cleaning.storage_key = f"cleanings/{cleaning.id.hex}"
    run = runs.create_run(session, kind=CLEAN_KIND, owner=user, params={"cleaning_id": str(cleaning.id)})
    cleaning.run_id = run.id
    session.flush()
    return cleaning


def tokenizer_spec(session: Session, dataset: Dataset) -> dict[str, Any] | None:
    """Where the dataset's base model keeps its tokenizer and chat template, for counting tokens in the worker;
    None when it has no base model ready to count with."""
    model = session.get(BaseModelRecord, dataset.model_id) if dataset.model_id else None
    if model is None or model.status != ModelStatus.ready or not model.storage_key:
        return None
    model_dir = artifact_path(model.storage_key)
    if renderer_for(model_dir, model.chat_template) is None:
        return None
    return {"model_dir": str(model_dir), "chat_template": model.chat_template}


def ner_model_problem(path: Path | None) -> str | None:
    """Why the configured NER model cannot find names, or None when it looks usable."""
    if path is None:
        return _(
            "finding names needs an NER model, and none is installed; an administrator sets REFINERY_NER_MODEL "
            "to a Hugging Face token-classification model directory."
        )
    try:
        config = json.loads((path / "config.json").read_text())
    except (OSError, ValueError):
        return _("the NER model at %(path)s has no readable config.json.", path=str(path))
    if not any(path.glob("*.safetensors")):
        return _("the NER model at %(path)s has no safetensors weights (only those are loaded).", path=str(path))
    if not (path / "tokenizer.json").is_file():
        return _("the NER model at %(path)s has no tokenizer.json (a fast tokenizer is needed).", path=str(path))
    labels = [str(v).rpartition("-")[2].upper() for v in (config.get("id2label") or {}).values()]
    if not {"PER", "PERSON"} & set(labels):
        return _("the NER model at %(path)s has no person label (PER or PERSON).", path=str(path))
    return None


def get_cleaning(session: Session, cleaning_id: uuid.UUID, *, user: User) -> Cleaning:
    return get_owned(session, Cleaning, cleaning_id, user=user, message=_("No such cleaning run."))


def list_cleanings(session: Session, *, user: User, version_id: uuid.UUID | None = None) -> list[Cleaning]:
    stmt = select(Cleaning).where(Cleaning.owner_id == user.id)
    if version_id is not None:
        stmt = stmt.where(Cleaning.version_id == version_id)
    return list(session.scalars(stmt.order_by(Cleaning.created_at.desc())))


def dataset_cleanings(session: Session, dataset: Dataset, *, user: User) -> list[Cleaning]:
    """The cleanings of every version of a dataset, newest first."""
    version_ids = [v.id for v in datasets.versions(session, dataset)]
    if not version_ids:
        return []
    stmt = select(Cleaning).where(Cleaning.owner_id == user.id, Cleaning.version_id.in_(version_ids))
    return list(session.scalars(stmt.order_by(Cleaning.created_at.desc())))


def cleaning_run(session: Session, cleaning: Cleaning) -> Run:
    return runs.required_run(session, cleaning.run_id)


def apply_result(session: Session, run_id: uuid.UUID, result: dict[str, Any]) -> None:
    cleaning = session.scalar(select(Cleaning).where(Cleaning.run_id == run_id))
    if cleaning is not None:
        cleaning.summary = result


def _ready(session: Session, cleaning: Cleaning) -> None:
    if cleaning_run(session, cleaning).status != RunStatus.succeeded:
        raise Conflict(_("The cleaning run has not finished yet; its decisions appear when it has."))


# --- decisions and overrides ------------------------------------------------------------------------------


@dataclass(frozen=True)
class DecisionRow:
    record_id: str
    split: str
    step: int
    op: str
    action: str
    reason: str
    evidence: dict[str, Any]
    override: str | None


def _decisions_table(cleaning: Cleaning, *, step: int | None, reason: str, action: str, duplicate_of: str = "") -> Any:
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    table = pq.read_table(str(artifact_path(f"{cleaning.storage_key}/decisions.parquet")))
    if step is not None:
        table = table.filter(pc.equal(table["step"], step))
    if reason:
        table = table.filter(pc.equal(table["reason"], reason))
    if action:
        table = table.filter(pc.equal(table["action"], action))
    if duplicate_of:  # one cluster: every record dropped as a duplicate of this one
        needle = json.dumps({"duplicate_of": duplicate_of})[1:-1]
        table = table.filter(pc.match_substring(table["evidence"], needle))
    return table


def overrides(session: Session, cleaning: Cleaning) -> dict[str, str]:
    stmt = select(CleaningOverride.record_id, CleaningOverride.action).where(
        CleaningOverride.cleaning_id == cleaning.id
    )
    return {rid: act for rid, act in session.execute(stmt)}


def override_counts(session: Session, cleaning: Cleaning) -> dict[str, int]:
    """How many records the user set to keep, drop or original."""
    chosen = overrides(session, cleaning).values()
    return {action: sum(1 for v in chosen if v == action) for action in ("keep", "drop", "original")}


def page_decisions(
    session: Session,
    cleaning: Cleaning,
    *,
    step: int | None = None,
    reason: str = "",
    action: str = "",
    duplicate_of: str = "",
    page: int = 1,
    page_size: int = PAGE_SIZE,
) -> tuple[list[DecisionRow], int]:
    _ready(session, cleaning)
    table = _decisions_table(cleaning, step=step, reason=reason, action=action, duplicate_of=duplicate_of)
    total = table.num_rows
    rows = table.slice(max(0, (page - 1) * page_size), page_size).to_pylist()
    chosen = overrides(session, cleaning)
    return _with_kept_text(cleaning, [_row(r, chosen.get(r["record_id"])) for r in rows]), total


def record_decisions(session: Session, cleaning: Cleaning, record_id: str) -> list[DecisionRow]:
    """Every decision about one record, in step order."""
    import pyarrow.compute as pc

    _ready(session, cleaning)
    table = _decisions_table(cleaning, step=None, reason="", action="")
    rows = table.filter(pc.equal(table["record_id"], record_id)).to_pylist()
    verdict = overrides(session, cleaning).get(record_id)
    return _with_kept_text(cleaning, [_row(r, verdict) for r in rows])


def kept_texts(cleaning: Cleaning, ids: set[str]) -> dict[str, str]:
    """The text of the kept records these duplicates were dropped for (the run writes them in kept.parquet)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    path = artifact_path(f"{cleaning.storage_key}/kept.parquet")
    if not ids or not path.is_file():
        return {}
    table = pq.read_table(str(path))
    table = table.filter(pc.is_in(table["record_id"], value_set=pa.array(sorted(ids), type=pa.string())))
    return dict(zip(table["record_id"].to_pylist(), table["text"].to_pylist(), strict=True))


def _with_kept_text(cleaning: Cleaning, rows: list[DecisionRow]) -> list[DecisionRow]:
    looked_up = [r for r in rows if r.op in ("near_dedup", "semantic_dedup") and "kept_text" not in r.evidence]
    texts = kept_texts(cleaning, {r.evidence["duplicate_of"] for r in looked_up})
    for row in looked_up:
        row.evidence["kept_text"] = texts.get(row.evidence["duplicate_of"], "")
    return rows


def _row(raw: dict[str, Any], override: str | None) -> DecisionRow:
    return DecisionRow(
        record_id=raw["record_id"],
        split=raw["split"],
        step=raw["step"],
        op=raw["op"],
        action=raw["action"],
        reason=raw["reason"],
        evidence=json.loads(raw["evidence"]),
        override=override,
    )


def _check_open(session: Session, cleaning: Cleaning) -> None:
    _ready(session, cleaning)
    if cleaning.committed_version_id is not None:
        raise Conflict(_("This cleaning has been committed; run the recipe again to change the decisions."))
    if committing(session, cleaning):
        raise Conflict(_("This cleaning is being committed; its new version appears when that finishes."))


def set_overrides(session: Session, cleaning: Cleaning, *, user: User, items: list[tuple[str, str]]) -> int:
    """Replace the verdict on records the recipe dropped or changed: keep, drop, original (undo the changes) or
    default (the recipe's verdict again). Returns how many records changed."""
    _check_open(session, cleaning)
    for _rid, action in items:
        if action not in ACTIONS:
            raise InvalidInput(_("An override is keep, drop, original or default."), field="action")
    decided = set(_decisions_table(cleaning, step=None, reason="", action="")["record_id"].to_pylist())
    unknown = [rid for rid, _a in items if rid not in decided]
    if unknown:
        raise InvalidInput(
            _("Record %(id)s has no decision in this cleaning to override.", id=unknown[0][:64]), field="record_id"
        )
    ids = [rid for rid, _a in items]
    for start in range(0, len(ids), 500):
        session.execute(
            delete(CleaningOverride).where(
                CleaningOverride.cleaning_id == cleaning.id, CleaningOverride.record_id.in_(ids[start : start + 500])
            )
        )
    session.add_all(
        CleaningOverride(cleaning_id=cleaning.id, record_id=rid, action=action, user_id=user.id)
        for rid, action in dict(items).items()
        if action != "default"
    )
    session.flush()
    return len(set(ids))


def override_filter(
    session: Session,
    cleaning: Cleaning,
    *,
    user: User,
    step: int | None,
    reason: str,
    action: str,
    to: str,
    duplicate_of: str = "",
) -> int:
    """One verdict for every record a filter shows (a step, a reason, drops or changes, a cluster)."""
    _check_open(session, cleaning)
    table = _decisions_table(cleaning, step=step, reason=reason, action=action, duplicate_of=duplicate_of)
    ids = sorted(set(table["record_id"].to_pylist()))
    return set_overrides(session, cleaning, user=user, items=[(rid, to) for rid in ids]) if ids else 0


# --- commit -----------------------------------------------------------------------------------------------


def commit_run(session: Session, cleaning: Cleaning) -> Run | None:
    return runs.optional_run(session, cleaning.commit_run_id)


def committing(session: Session, cleaning: Cleaning) -> bool:
    run = commit_run(session, cleaning)
    return run is not None and not run.status.is_final


def start_commit(session: Session, cleaning: Cleaning, *, user: User) -> Run:
    """Start the background run that writes the new version: the source records minus the drops, with the
    changes, as the overrides say. The overrides are frozen (written beside the decisions) while it runs."""
    _check_open(session, cleaning)
    source = session.get(DatasetVersion, cleaning.version_id)
    if source is None or session.get(Dataset, source.dataset_id) is None:
        raise NotFound(_("No such dataset version."))
    chosen = overrides(session, cleaning)
    if _kept_count(cleaning, chosen, source.record_count) == 0:
        raise InvalidInput(_("Every record would be dropped; restore some before committing."), field="overrides")
    name = f"overrides-{uuid.uuid4().hex}.json"
    (artifact_path(cleaning.storage_key) / name).write_text(json.dumps(chosen))
    params = {"cleaning_id": str(cleaning.id), "overrides_file": name}
    run = runs.create_run(session, kind=COMMIT_KIND, owner=user, params=params)
    cleaning.commit_run_id = run.id
    session.flush()
    return run


def _kept_count(cleaning: Cleaning, chosen: dict[str, str], total: int) -> int:
    """How many records the committed version would hold."""
    import pyarrow.parquet as pq

    path = artifact_path(cleaning.storage_key) / "decisions.parquet"
    table = pq.read_table(str(path), columns=["record_id", "action"])
    actions = zip(table["record_id"].to_pylist(), table["action"].to_pylist(), strict=True)
    dropped = {rid for rid, act in actions if act == "drop"}
    restored = sum(1 for rid in dropped if chosen.get(rid) in ("keep", "original"))
    dropped_by_user = sum(1 for rid, act in chosen.items() if act == "drop" and rid not in dropped)
    return total - len(dropped) + restored - dropped_by_user


def apply_commit(session: Session, run_id: uuid.UUID, result: dict[str, Any]) -> None:
    """The commit run finished: the new version, whose options record the recipe, the run and every override."""
    cleaning = session.scalar(select(Cleaning).where(Cleaning.commit_run_id == run_id))
    source = session.get(DatasetVersion, cleaning.version_id) if cleaning else None
    dataset = session.get(Dataset, source.dataset_id) if source else None
    if cleaning is None or source is None or dataset is None or cleaning.committed_version_id is not None:
        return
    chosen = overrides(session, cleaning)  # the ones the child read: they are locked while it runs
    summary = result["stats"]
    version = DatasetVersion(
        dataset_id=dataset.id,
        number=datasets.next_version_number(session, dataset),
        storage_key=f"{cleaning.storage_key}/records.parquet",
        record_count=result["records"],
        skipped_count=0,
        split_counts=summary["splits"],
        kind_counts=summary["kinds"],
        stats=summary,
        source="cleaning",
        parent_version_id=source.id,
        upload_id=source.upload_id,
        run_id=cleaning.run_id,
        options={
            **source.options,
            "cleaning_id": str(cleaning.id),
            "commit_run_id": str(run_id),
            "recipe": cleaning.recipe_name,
            "steps": cleaning.steps,
            "overrides": override_counts(session, cleaning),
            "overridden_records": sorted(chosen.items())[:10_000],
        },
    )
    session.add(version)
    session.flush()
    cleaning.committed_version_id = version.id
    session.flush()
