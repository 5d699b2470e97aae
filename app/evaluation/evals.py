"""OpenAI's evals on Refinery: an eval is a saved set of graders (testing criteria) and the shape of an item;
a run grades a data source's items with them as a background run (the ``runs`` table: progress, cancel,
retried by another worker when one is lost), keeping every item's grades in ``output_items.jsonl``.

A run's data source is JSONL (inline ``file_content`` or an uploaded file's lines), each line an item and
the sample answer to grade (``{"item": {...}, "sample": {"output_text": "..."}}``), or a ``completions``
source: the same items, each answered first by a model here through the inference process (its prompt a
template over the item, or one of the item's fields), then graded."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter
from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from app.core.errors import InvalidInput, NotFound
from app.core.i18n import _
from app.core.ownership import get_owned
from app.core.validation import Metadata
from app.datasets.storage import artifact_path, remove_tree
from app.db.models import EvalDefinition, EvalRun, Run, RunStatus, User
from app.evaluation.judges import check_grader_models
from app.graders.checks import GraderInvalid, validate
from app.graders.specs import (
    Grader,
    GraderMessage,
    LabelModelGrader,
    ScoreModelGrader,
    StringCheckGrader,
    TextSimilarityGrader,
)
from app.graders.template import TemplateError, check
from app.runs import service as runs

EVAL_RUN_KIND = "eval_run"
MAX_ITEMS = 10_000
MAX_ITEMS_BYTES = 50 * 1024 * 1024


class CustomDataSourceConfig(BaseModel):
    """The items' JSON schema (``item_schema``) and whether items come with a sample to grade."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["custom"]
    item_schema: dict[str, Any] = Field(description="The JSON schema of an item.")
    include_sample_schema: bool = Field(default=False, description="Whether items carry a sample to grade.")


class OtherDataSourceConfig(BaseModel):
    """Stored completions or logs as the source (not read by evals yet: refused with the reason)."""

    model_config = ConfigDict(extra="allow")
    type: Literal["logs", "stored_completions"]


class EvalCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str | None = Field(default=None, max_length=200)
    data_source_config: Annotated[CustomDataSourceConfig | OtherDataSourceConfig, Field(discriminator="type")]
    testing_criteria: list[Grader] = Field(min_length=1, max_length=20)
    metadata: Metadata | None = None


class EvalUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str | None = Field(default=None, max_length=200)
    metadata: Metadata | None = None


class ContentRow(BaseModel):
    model_config = ConfigDict(extra="forbid")
    item: dict[str, Any]
    sample: dict[str, Any] | None = None


class FileContentSource(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["file_content"]
    content: list[ContentRow] = Field(min_length=1, max_length=MAX_ITEMS)


class FileIdSource(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["file_id"]
    id: str = Field(min_length=1, max_length=100)


class JsonlDataSource(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["jsonl"]
    source: Annotated[FileContentSource | FileIdSource, Field(discriminator="type")]


class TemplateMessages(BaseModel):
    """The prompt for each item: messages whose text holds ``{{ item.field }}`` templates."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["template"]
    template: list[GraderMessage] = Field(min_length=1, max_length=50)


class ItemReference(BaseModel):
    """The prompt for each item is one of its fields, a list of {role, content} (``item.messages``)."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["item_reference"]
    item_reference: str = Field(min_length=1, max_length=200, pattern=r"^item(\.[A-Za-z0-9_]+)+$")


class EvalSampling(BaseModel):
    model_config = ConfigDict(extra="forbid")
    temperature: float | None = Field(default=None, ge=0, le=2)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=4096)
    top_p: float | None = Field(default=None, gt=0, le=1)
    seed: int | None = Field(default=None, ge=0, le=2**31 - 1)


class CompletionsDataSource(BaseModel):
    """Each item's prompt answered by a model here (a base model, a fine-tuned model or a checkpoint, by the id
    ``client.models.list()`` shows), then graded."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["completions"]
    source: Annotated[FileContentSource | FileIdSource, Field(discriminator="type")]
    input_messages: Annotated[TemplateMessages | ItemReference, Field(discriminator="type")]
    model: str = Field(min_length=1, max_length=200)
    sampling_params: EvalSampling | None = None


class StoredResponsesSource(BaseModel):
    """Responses stored by OpenAI's Responses API, filtered: refused, with the reason (none are stored here)."""

    model_config = ConfigDict(extra="allow")
    type: Literal["responses"]


class ResponsesDataSource(BaseModel):
    """OpenAI's ``responses`` run source: each item's prompt answered by a model here, as a completions source
    does (the Responses API's sampling settings that a chat model here has: temperature, top-p, the answer's
    length and a seed). Its stored-responses source is refused with the reason."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["responses"]
    source: Annotated[FileContentSource | FileIdSource | StoredResponsesSource, Field(discriminator="type")]
    input_messages: Annotated[TemplateMessages | ItemReference, Field(discriminator="type")]
    model: str = Field(min_length=1, max_length=200)
    sampling_params: EvalSampling | None = None


class EvalRunCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str | None = Field(default=None, max_length=200)
    data_source: Annotated[JsonlDataSource | CompletionsDataSource | ResponsesDataSource, Field(discriminator="type")]
    metadata: Metadata | None = None


GRADER: TypeAdapter[Any] = TypeAdapter(Grader)


def criterion(spec: dict[str, Any]) -> Any:
    return GRADER.validate_python(spec)


def pass_threshold(grader: Any) -> float:
    """The score an item needs on a criterion to pass it: 1 for a string check and a label (a yes or no),
    the criterion's ``pass_threshold`` when given, else half-way (0.5 for a python grader, the middle of a
    score model's range, 0.5 for a formula)."""
    if isinstance(grader, StringCheckGrader | LabelModelGrader):
        return 1.0
    given = getattr(grader, "pass_threshold", None)
    if given is not None:
        return float(given)
    if isinstance(grader, ScoreModelGrader):
        low, high = grader.bounds()
        return (low + high) / 2
    return 0.5


def _check_criteria(session: Session, criteria: list[Any]) -> None:
    names: set[str] = set()
    for index, grader in enumerate(criteria):
        prefix = f"testing_criteria.{index}"
        try:
            validate(grader, prefix, in_worker=True)
        except GraderInvalid as exc:
            raise InvalidInput(str(exc), field=exc.field) from None
        check_grader_models(session, grader, prefix)
        if isinstance(grader, TextSimilarityGrader) and grader.pass_threshold is None:
            raise InvalidInput(
                _("A text_similarity criterion needs a pass_threshold (the similarity an item must reach)."),
                field=f"{prefix}.pass_threshold",
            )
        if grader.name in names:
            raise InvalidInput(
                _("Each testing criterion needs a name of its own; '%(name)s' is used twice.", name=grader.name),
                field=f"{prefix}.name",
            )
        names.add(grader.name)


def _schema(config: CustomDataSourceConfig) -> dict[str, Any]:
    """The schema OpenAI answers for a custom source: an object with the item (and the sample)."""
    properties: dict[str, Any] = {"item": config.item_schema}
    required = ["item"]
    if config.include_sample_schema:
        properties["sample"] = {
            "type": "object",
            "properties": {"output_text": {"type": "string"}, "output_json": {"type": "object"}},
            "required": ["output_text"],
        }
        required.append("sample")
    return {"type": "object", "properties": properties, "required": required}


def create_eval(session: Session, *, user: User, body: EvalCreate) -> EvalDefinition:
    config = body.data_source_config
    if not isinstance(config, CustomDataSourceConfig):
        raise InvalidInput(
            _(
                "A '%(type)s' data source is not read by evals here yet (stored completions are listed by "
                "GET /v1/chat/completions): describe your items with a 'custom' data_source_config (item_schema) "
                "and send them with each run.",
                type=config.type,
            ),
            field="data_source_config.type",
        )
    _check_criteria(session, body.testing_criteria)
    row = EvalDefinition(
        owner_id=user.id,
        name=(body.name or "").strip() or _("Eval"),
        data_source_config={"type": "custom", "schema": _schema(config)},
        testing_criteria=[c.model_dump(mode="json", exclude_none=True) for c in body.testing_criteria],
        metadata_=body.metadata,
    )
    session.add(row)
    session.flush()
    return row


def get_eval(session: Session, eval_id: uuid.UUID, *, user: User) -> EvalDefinition:
    return get_owned(session, EvalDefinition, eval_id, user=user, message=_("No such eval."))


def list_evals(session: Session, *, user: User) -> list[EvalDefinition]:
    stmt = select(EvalDefinition).where(EvalDefinition.owner_id == user.id)
    return list(session.scalars(stmt.order_by(EvalDefinition.created_at.desc(), EvalDefinition.id.desc())))


def page_evals(
    session: Session, *, user: User, after: EvalDefinition | None, limit: int, newest_first: bool
) -> tuple[list[EvalDefinition], bool]:
    stmt = select(EvalDefinition).where(EvalDefinition.owner_id == user.id)
    order = (EvalDefinition.created_at.desc(), EvalDefinition.id.desc())
    if not newest_first:
        order = (EvalDefinition.created_at.asc(), EvalDefinition.id.asc())
    if after is not None:
        if newest_first:
            stmt = stmt.where(
                (EvalDefinition.created_at < after.created_at)
                | ((EvalDefinition.created_at == after.created_at) & (EvalDefinition.id < after.id))
            )
        else:
            stmt = stmt.where(
                (EvalDefinition.created_at > after.created_at)
                | ((EvalDefinition.created_at == after.created_at) & (EvalDefinition.id > after.id))
            )
    rows = list(session.scalars(stmt.order_by(*order).limit(limit + 1)))
    return rows[:limit], len(rows) > limit


def update_eval(row: EvalDefinition, body: EvalUpdate) -> EvalDefinition:
    if body.name is not None and body.name.strip():
        row.name = body.name.strip()
    if body.metadata is not None:
        row.metadata_ = body.metadata
    return row


def delete_eval(session: Session, row: EvalDefinition) -> None:
    """The eval, its runs (those in progress are cancelled) and their files."""
    for eval_run in list_runs(session, row):
        _stop(session, eval_run)
    remove_tree(f"evals/{row.id.hex}")
    session.delete(row)


def parse_lines(raw: bytes, *, field: str) -> list[dict[str, Any]]:
    """JSONL items: each line ``{"item": {...}, "sample": {...}}``, or an object taken as the item itself.
    A line that is not a JSON object is refused with its number."""
    rows: list[dict[str, Any]] = []
    for number, line in enumerate(raw.decode("utf-8", errors="replace").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InvalidInput(
                _("Line %(line)s is not JSON (%(error)s).", line=number, error=exc.msg), field=field
            ) from None
        if not isinstance(value, dict):
            raise InvalidInput(_("Line %(line)s is not a JSON object.", line=number), field=field)
        if isinstance(value.get("item"), dict) and set(value) <= {"item", "sample"}:
            sample = value.get("sample")
            rows.append({"item": value["item"], "sample": sample if isinstance(sample, dict) else None})
        else:
            rows.append({"item": value, "sample": None})
        if len(rows) > MAX_ITEMS:
            raise InvalidInput(_("A run grades at most %(n)s items.", n=MAX_ITEMS), field=field)
    if not rows:
        raise InvalidInput(_("The file holds no items."), field=field)
    return rows


def create_run(
    session: Session,
    *,
    user: User,
    row: EvalDefinition,
    body: EvalRunCreate,
    file_bytes: bytes | None,
    inference_model: str | None = None,
) -> EvalRun:
    """``file_bytes``: the uploaded file's content when the source names a file (read by the caller);
    ``inference_model``: the name the inference process knows the run's model by (resolved by the caller,
    who checked it is the user's), for a completions source."""
    source = body.data_source
    refuse_stored(source)
    if isinstance(source.source, FileContentSource):
        items = [r.model_dump() for r in source.source.content]
    else:
        assert file_bytes is not None
        items = parse_lines(file_bytes, field="data_source.source.id")
    sampling = None
    if isinstance(source, CompletionsDataSource | ResponsesDataSource):
        assert inference_model is not None
        sampling = _sampling_plan(source, inference_model)
    eval_run = EvalRun(
        eval_id=row.id,
        owner_id=user.id,
        name=(body.name or "").strip() or _("Run"),
        data_source=source.model_dump(mode="json", exclude={"source": {"content"}}, exclude_none=True),
        model=source.model if isinstance(source, CompletionsDataSource | ResponsesDataSource) else "",
        metadata_=body.metadata,
    )
    session.add(eval_run)
    session.flush()
    eval_run.storage_key = f"evals/{row.id.hex}/{eval_run.id.hex}"
    folder = artifact_path(eval_run.storage_key)
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / "items.jsonl").open("w", encoding="utf-8") as out:
        for entry in items:
            out.write(json.dumps(entry, ensure_ascii=False) + "\n")
    if sampling is not None:
        (folder / "sampling.json").write_text(json.dumps(sampling), encoding="utf-8")
    eval_run.run_id = runs.create_run(
        session, kind=EVAL_RUN_KIND, owner=user, params={"eval_run_id": str(eval_run.id)}
    ).id
    session.flush()
    return eval_run


def refuse_stored(source: JsonlDataSource | CompletionsDataSource | ResponsesDataSource) -> None:
    """A filter over stored responses as the items is refused, with the reason (checked before anything else)."""
    if isinstance(source.source, StoredResponsesSource):
        raise InvalidInput(
            _(
                "A 'responses' source that filters stored responses is not offered: Refinery stores no Responses "
                "API objects. Give the items as file_content or a file_id; the model named answers each one."
            ),
            field="data_source.source.type",
        )


def check_prompt(source: CompletionsDataSource | ResponsesDataSource) -> None:
    """A template prompt's templates name only the item (the sample is what the model writes)."""
    messages = source.input_messages
    if isinstance(messages, TemplateMessages):
        for index, message in enumerate(messages.template):
            try:
                check(message.text())
            except TemplateError as exc:
                raise InvalidInput(str(exc), field=f"data_source.input_messages.template.{index}.content") from None
            if "sample." in message.text():
                raise InvalidInput(
                    _("The prompt cannot read the sample: it is what the model is asked to write."),
                    field=f"data_source.input_messages.template.{index}.content",
                )


def _sampling_plan(source: CompletionsDataSource | ResponsesDataSource, inference_model: str) -> dict[str, Any]:
    """What the run's child asks the inference process for each item (written beside the items)."""
    check_prompt(source)
    messages = source.input_messages
    if isinstance(messages, TemplateMessages):
        prompt: dict[str, Any] = {"template": [{"role": m.role, "content": m.text()} for m in messages.template]}
    else:
        prompt = {"item_reference": messages.item_reference}
    params = source.sampling_params or EvalSampling()
    return {
        "model": source.model,
        "inference_model": inference_model,
        "prompt": prompt,
        "params": {
            "temperature": params.temperature if params.temperature is not None else 1.0,
            "max_tokens": params.max_completion_tokens or 256,
            "top_p": params.top_p if params.top_p is not None else 1.0,
            **({"seed": params.seed} if params.seed is not None else {}),
        },
    }


def list_runs(session: Session, row: EvalDefinition) -> list[EvalRun]:
    """Newest first, each with its background run loaded (the lists show every run's status)."""
    stmt = select(EvalRun).where(EvalRun.eval_id == row.id).options(selectinload(EvalRun.run))
    return list(session.scalars(stmt.order_by(EvalRun.created_at.desc(), EvalRun.id.desc())))


def get_run(session: Session, row: EvalDefinition, run_id: uuid.UUID) -> EvalRun:
    found = session.get(EvalRun, run_id)
    if found is None or found.eval_id != row.id:
        raise NotFound(_("No such run of this eval."))
    return found


def _stop(session: Session, eval_run: EvalRun) -> None:
    run = runs.optional_run(session, eval_run.run_id)
    if run is not None and not run.status.is_final:
        runs.request_cancel(session, run)


def cancel_run(session: Session, eval_run: EvalRun) -> EvalRun:
    _stop(session, eval_run)
    return eval_run


def delete_run(session: Session, eval_run: EvalRun) -> None:
    _stop(session, eval_run)
    remove_tree(eval_run.storage_key)
    session.delete(eval_run)


STATUS = {
    RunStatus.queued: "queued",
    RunStatus.running: "in_progress",
    RunStatus.paused: "in_progress",
    RunStatus.succeeded: "completed",
    RunStatus.failed: "failed",
    RunStatus.cancelled: "canceled",
}


def run_status(run: Run | None) -> str:
    return STATUS[run.status] if run is not None else "failed"


@dataclass(frozen=True)
class OutputItems:
    rows: list[dict[str, Any]]
    has_more: bool


def output_items(eval_run: EvalRun) -> list[dict[str, Any]]:
    path = artifact_path(f"{eval_run.storage_key}/output_items.jsonl")
    if not eval_run.storage_key or not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def page_output_items(
    eval_run: EvalRun, *, after: int | None, limit: int, status: str | None, newest_first: bool
) -> OutputItems:
    rows = [r for r in output_items(eval_run) if status is None or r["status"] == status]
    rows.sort(key=lambda r: int(r["index"]), reverse=newest_first)
    if after is not None:
        rows = [r for r in rows if (int(r["index"]) < after if newest_first else int(r["index"]) > after)]
    return OutputItems(rows[:limit], len(rows) > limit)


def summarise(criteria: list[dict[str, Any]], graded: list[dict[str, Any]]) -> dict[str, Any]:
    """OpenAI's result_counts and per_testing_criteria_results over the graded items."""
    counts = {"total": len(graded), "passed": 0, "failed": 0, "errored": 0}
    per = {c["name"]: {"testing_criteria": c["name"], "passed": 0, "failed": 0} for c in criteria}
    for row in graded:
        counts[{"pass": "passed", "fail": "failed"}.get(row["status"], "errored")] += 1
        for result in row["results"]:
            per[result["name"]]["passed" if result["passed"] else "failed"] += 1
    return {"result_counts": counts, "per_testing_criteria_results": list(per.values())}
