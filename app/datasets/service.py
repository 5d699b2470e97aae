"""Datasets: create from an upload, validate in the background, import, version, split."""

from __future__ import annotations

import io
import json
import uuid
from typing import Any

from sqlalchemy import and_, func, or_, select
from sqlalchemy.orm import Session, selectinload

from app.basemodels import service as models
from app.core.errors import Conflict, InvalidInput, NotFound
from app.core.i18n import _
from app.core.ownership import get_owned, referenced
from app.core.validation import MAX_SEED
from app.datasets.formats import FORMATS
from app.datasets.reading import FILE_TYPES, TEXT_SPLITS
from app.datasets.splits import DEFAULT_RATIOS, SPLITS, normalize_ratios
from app.datasets.storage import StoredFile, artifact_path, remove_tree, save_stream
from app.db.models import Dataset, DatasetStatus, DatasetVersion, ModelStatus, Run, Upload, User
from app.runs.service import create_run, on_run_failure, optional_run

VALIDATE_KIND = "dataset_validate"
MAPPABLE_FIELDS = (
    "messages",
    "conversations",
    "instruction",
    "input",
    "output",
    "system",
    "prompt",
    "completion",
    "chosen",
    "rejected",
    "context",
    "responses",
    "label",
    "text",
)


def list_datasets(session: Session, *, user: User) -> list[Dataset]:
    stmt = select(Dataset).where(Dataset.owner_id == user.id).order_by(Dataset.created_at.desc())
    return list(session.scalars(stmt))


def page_datasets(
    session: Session, *, user: User, after: uuid.UUID | None, limit: int, newest_first: bool = True
) -> tuple[list[Dataset], bool]:
    """A page of the user's datasets after the dataset ``after`` (a cursor), paged in SQL with each one's
    upload preloaded. (datasets, whether more follow)."""
    order = (Dataset.created_at.desc(), Dataset.id.desc()) if newest_first else (Dataset.created_at, Dataset.id)
    stmt = select(Dataset).where(Dataset.owner_id == user.id).order_by(*order).options(selectinload(Dataset.upload))
    if after is not None:
        cursor = session.execute(
            select(Dataset.created_at, Dataset.id).where(Dataset.id == after, Dataset.owner_id == user.id)
        ).first()
        if cursor is None:
            return [], False
        if newest_first:
            later = or_(
                Dataset.created_at < cursor.created_at,
                and_(Dataset.created_at == cursor.created_at, Dataset.id < cursor.id),
            )
        else:
            later = or_(
                Dataset.created_at > cursor.created_at,
                and_(Dataset.created_at == cursor.created_at, Dataset.id > cursor.id),
            )
        stmt = stmt.where(later)
    rows = list(session.scalars(stmt.limit(limit + 1)))
    return rows[:limit], len(rows) > limit


def get_dataset(session: Session, dataset_id: uuid.UUID, *, user: User) -> Dataset:
    return get_owned(session, Dataset, dataset_id, user=user, message=_("No such dataset."))


def get_upload(session: Session, dataset: Dataset) -> Upload:
    return referenced(session, Upload, dataset.upload_id)  # preloaded by the lists (page_datasets)


def versions(session: Session, dataset: Dataset) -> list[DatasetVersion]:
    stmt = select(DatasetVersion).where(DatasetVersion.dataset_id == dataset.id).order_by(DatasetVersion.number.desc())
    return list(session.scalars(stmt))


def get_version(session: Session, dataset: Dataset, version_id: uuid.UUID) -> DatasetVersion:
    version = session.get(DatasetVersion, version_id)
    if version is None or version.dataset_id != dataset.id:
        raise NotFound(_("No such dataset version."))
    return version


def validation_run(session: Session, dataset: Dataset) -> Run | None:
    return optional_run(session, dataset.validation_run_id)


def _options(
    *,
    record_format: str | None,
    file_type: str | None,
    ratios: dict[str, float] | None,
    seed: int | None,
    mapping: dict[str, str] | None,
    text_split: str | None = None,
) -> dict[str, Any]:
    if text_split and text_split not in TEXT_SPLITS:
        raise InvalidInput(
            _("Split plain text by one of: %(choices)s.", choices=", ".join(TEXT_SPLITS)), field="text_split"
        )
    if record_format and record_format not in FORMATS:
        raise InvalidInput(_("Unknown record format; choose one from the list."), field="record_format")
    if file_type and file_type not in FILE_TYPES:
        raise InvalidInput(_("Unknown file type; choose one from the list."), field="file_type")
    clean_ratios = dict(DEFAULT_RATIOS)
    if seed is not None and not 0 <= seed <= MAX_SEED:
        raise InvalidInput(_("The seed is a whole number from 0 to %(max)s.", max=MAX_SEED), field="seed")
    if ratios is not None:
        if any(not isinstance(v, int | float) or not 0 <= v <= 100 for v in ratios.values()) or set(ratios) - set(
            SPLITS
        ):
            raise InvalidInput(_("Split ratios are numbers ≥ 0 for train, validation and test."), field="splits")
        if sum(ratios.values()) <= 0 or ratios.get("train", 0) <= 0:
            raise InvalidInput(_("The train split needs a ratio above 0."), field="splits")
        clean_ratios = normalize_ratios(ratios)
    clean_mapping = None
    if mapping:
        clean_mapping = {k: v for k, v in mapping.items() if v}
        if set(clean_mapping) - set(MAPPABLE_FIELDS):
            raise InvalidInput(_("Map columns only to the listed record fields."), field="mapping")
    return {
        "record_format": record_format or None,
        "file_type": file_type or None,
        "split_ratios": clean_ratios,
        "split_seed": 42 if seed is None else int(seed),
        "column_mapping": clean_mapping,
        "text_split": text_split or None,
    }


def _check_model(session: Session, model_id: uuid.UUID | None, user: User) -> uuid.UUID | None:
    """The model whose tokenizer and context judge the records: the chosen one, else the first ready one."""
    if model_id is None:
        ready = [m for m in models.list_models(session, user=user) if m.status == ModelStatus.ready]
        return ready[0].id if ready else None
    model = models.get_model(session, model_id, user=user)
    if model.status != ModelStatus.ready:
        raise InvalidInput(_("That model is not ready yet; wait for its import to finish."), field="model_id")
    return model.id


def _start_validation(session: Session, dataset: Dataset, user: User) -> Dataset:
    session.flush()
    run = create_run(session, kind=VALIDATE_KIND, owner=user, params={"dataset_id": str(dataset.id)})
    dataset.validation_run_id = run.id
    dataset.status = DatasetStatus.validating
    dataset.error_message = None
    session.flush()
    return dataset


def _upload_row(session: Session, user: User, stored: StoredFile, filename: str) -> Upload:
    upload = Upload(
        owner_id=user.id,
        filename=(filename or "upload").replace("\x00", "")[-255:],
        size_bytes=stored.size,
        sha256=stored.sha256,
        storage_key=stored.key,
    )
    session.add(upload)
    session.flush()
    return upload


def dataset_from_records(
    session: Session, *, user: User, records: list[dict[str, Any]], filename: str, name: str, record_format: str
) -> Dataset:
    """A dataset made here rather than uploaded (preference pairs from the playground, answers from Traffic):
    the records as a JSONL upload, validated in the background like any other."""
    payload = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode()
    stored = save_stream(io.BytesIO(payload), limit=len(payload) + 1)
    return create_dataset(session, user=user, stored=stored, filename=filename, name=name, record_format=record_format)


def create_dataset(
    session: Session,
    *,
    user: User,
    stored: StoredFile,
    filename: str,
    name: str | None,
    model_id: uuid.UUID | None = None,
    record_format: str | None = None,
    file_type: str | None = None,
    ratios: dict[str, float] | None = None,
    seed: int | None = None,
    mapping: dict[str, str] | None = None,
    split_files: dict[str, tuple[StoredFile, str]] | None = None,
    text_split: str | None = None,
) -> Dataset:
    """``split_files``: separate uploads whose records all go to the validation or test split."""
    options = _options(
        record_format=record_format,
        file_type=file_type,
        ratios=ratios,
        seed=seed,
        mapping=mapping,
        text_split=text_split,
    )
    checked_model = _check_model(session, model_id, user)
    upload = _upload_row(session, user, stored, filename)
    split_ids = {
        split: str(_upload_row(session, user, extra, extra_name).id)
        for split, (extra, extra_name) in (split_files or {}).items()
        if split in ("validation", "test")
    }
    dataset = Dataset(
        owner_id=user.id,
        name=(name or upload.filename).strip()[:200] or upload.filename,
        upload_id=upload.id,
        split_upload_ids=split_ids or None,
        format_override=options["record_format"],
        file_type=options["file_type"],
        column_mapping=options["column_mapping"],
        text_split=options["text_split"],
        model_id=checked_model,
        split_ratios=options["split_ratios"],
        split_seed=options["split_seed"],
    )
    session.add(dataset)
    return _start_validation(session, dataset, user)


def split_uploads(session: Session, dataset: Dataset) -> dict[str, Upload]:
    uploads = {}
    for split, upload_id in (dataset.split_upload_ids or {}).items():
        upload = session.get(Upload, uuid.UUID(upload_id))
        if upload is not None:
            uploads[split] = upload
    return uploads


def revalidate(
    session: Session,
    dataset: Dataset,
    *,
    user: User,
    record_format: str | None,
    file_type: str | None,
    ratios: dict[str, float] | None,
    seed: int | None,
    mapping: dict[str, str] | None,
    model_id: uuid.UUID | None,
    text_split: str | None = None,
) -> Dataset:
    if dataset.status == DatasetStatus.validating:
        raise Conflict(_("This dataset is being validated; wait for it to finish."))
    options = _options(
        record_format=record_format,
        file_type=file_type,
        ratios=ratios,
        seed=seed,
        mapping=mapping,
        text_split=text_split,
    )
    dataset.format_override = options["record_format"]
    dataset.file_type = options["file_type"]
    dataset.column_mapping = options["column_mapping"]
    dataset.text_split = options["text_split"]
    dataset.split_ratios = options["split_ratios"]
    dataset.split_seed = options["split_seed"]
    dataset.model_id = _check_model(session, model_id, user)
    return _start_validation(session, dataset, user)


def replace_upload(session: Session, dataset: Dataset, *, user: User, stored: StoredFile, filename: str) -> Dataset:
    """'Fix and re-upload': validate a corrected main file under the same dataset and options."""
    if dataset.status == DatasetStatus.validating:
        raise Conflict(_("This dataset is being validated; wait for it to finish."))
    dataset.upload_id = _upload_row(session, user, stored, filename).id
    return _start_validation(session, dataset, user)


def staged_records_key(dataset: Dataset) -> str:
    return f"datasets/{dataset.id.hex}/staging/{dataset.validation_run_id.hex if dataset.validation_run_id else ''}"


def next_version_number(session: Session, dataset: Dataset) -> int:
    current = session.scalar(select(func.max(DatasetVersion.number)).where(DatasetVersion.dataset_id == dataset.id))
    return int(current or 0) + 1


def create_version_from_validation(session: Session, dataset: Dataset) -> DatasetVersion:
    report = dataset.report or {}
    if report.get("records", 0) <= 0:
        raise Conflict(_("No valid records to import; fix the file and upload it again."))
    stats = report.get("stats", {})
    version = DatasetVersion(
        dataset_id=dataset.id,
        number=next_version_number(session, dataset),
        storage_key=f"{staged_records_key(dataset)}/records.parquet",
        record_count=int(report["records"]),
        skipped_count=int(report.get("invalid_lines", 0)),
        split_counts=stats.get("splits", {}),
        kind_counts=stats.get("kinds", {}),
        stats=stats,
        source="import",
        upload_id=dataset.upload_id,
        run_id=dataset.validation_run_id,
        options={
            "record_format": report.get("record_format"),
            "file_type": report.get("file_type"),
            "format_override": dataset.format_override,
            "column_mapping": report.get("column_mapping") or dataset.column_mapping,
            "mapping_auto": bool(report.get("mapping_auto")),
            "text_split": report.get("text_split"),
            "split_ratios": dataset.split_ratios,
            "split_seed": dataset.split_seed,
            "split_files": {split: u.filename for split, u in split_uploads(session, dataset).items()},
            "model_id": str(dataset.model_id) if dataset.model_id else None,
        },
    )
    session.add(version)
    dataset.status = DatasetStatus.ready
    session.flush()
    return version


def import_valid(session: Session, dataset: Dataset) -> DatasetVersion:
    if dataset.status != DatasetStatus.needs_review:
        raise Conflict(_("There is no validation report waiting for a decision."))
    return create_version_from_validation(session, dataset)


def apply_validation(session: Session, run_id: uuid.UUID, result: dict[str, Any]) -> None:
    """Called by the worker when validation succeeds."""
    dataset = session.scalar(select(Dataset).where(Dataset.validation_run_id == run_id))
    if dataset is None:
        return
    dataset.report = result
    dataset.record_format = result.get("record_format")
    if result.get("invalid_lines", 0) == 0 and result.get("records", 0) > 0:
        create_version_from_validation(session, dataset)
    else:
        dataset.status = DatasetStatus.needs_review


def _validation_failed(session: Session, run_id: uuid.UUID, message: str) -> None:
    dataset = session.scalar(select(Dataset).where(Dataset.validation_run_id == run_id))
    if dataset is not None:
        dataset.status = DatasetStatus.failed
        dataset.error_message = message


on_run_failure(VALIDATE_KIND, _validation_failed)


def deletable(session: Session, dataset: Dataset) -> bool:
    """Whether nothing trained on or was evaluated on any version of the dataset (those keep their data)."""
    from app.db.models import Evaluation, TrainingJob

    ids = [v.id for v in versions(session, dataset)]
    if not ids:
        return True
    used = (
        select(TrainingJob.id).where(
            TrainingJob.dataset_version_id.in_(ids)
            | TrainingJob.general_version_id.in_(ids)
            | TrainingJob.validation_version_id.in_(ids)
        ),
        select(Evaluation.id).where(Evaluation.dataset_version_id.in_(ids)),
    )
    if not all(session.scalar(stmt.limit(1)) is None for stmt in used):
        return False
    # a version mixed into a job (TrainingSpec.mix) is in the job's spec; jobs mix only their owner's versions
    wanted = {str(i) for i in ids}
    specs = session.scalars(select(TrainingJob.spec).where(TrainingJob.owner_id == dataset.owner_id))
    return not any(str(part.get("version_id")) in wanted for spec in specs for part in (spec or {}).get("mix") or [])


def delete_dataset(session: Session, dataset: Dataset) -> None:
    """Remove a dataset no job or evaluation uses: its versions, its uploads and their files."""
    uploads = [get_upload(session, dataset), *split_uploads(session, dataset).values()]
    keys = [v.storage_key for v in versions(session, dataset)]
    folder = f"datasets/{dataset.id.hex}"
    for version in versions(session, dataset):
        session.delete(version)
    session.delete(dataset)
    session.flush()
    for upload in uploads:
        session.delete(upload)
    session.flush()
    for key in keys:
        artifact_path(key).unlink(missing_ok=True)
    remove_tree(folder)
    for upload in uploads:
        artifact_path(upload.storage_key).unlink(missing_ok=True)
