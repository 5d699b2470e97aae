"""Presets: named specs to start a job from. A few come with Refinery; users save their own from the form."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.core.errors import Conflict, InvalidInput, NotFound
from app.core.i18n import N_, _
from app.core.ownership import get_owned
from app.db.models import TrainingPreset, User
from app.jobs.spec import TrainingSpec


@dataclass(frozen=True)
class BuiltinPreset:
    key: str
    name: str  # an N_ text, shown translated
    description: str
    values: dict[str, Any]

    def spec(self) -> TrainingSpec:
        return TrainingSpec.model_validate(self.values)


BUILTIN = (
    BuiltinPreset(
        "cpu-quick-lora",
        N_("Quick LoRA on CPU"),
        N_("30 steps with short sequences: a first run on a small model in minutes, to check data and settings."),
        {"max_steps": 30, "batch_size": 4, "max_seq_length": 256, "eval_steps": 10, "save_steps": 10},
    ),
    BuiltinPreset(
        "lora-sft",
        N_("LoRA SFT"),
        N_("The usual starting point: rank 16 on all linear layers, one epoch, cosine schedule."),
        {},
    ),
    BuiltinPreset(
        "qlora-24gb",
        N_("QLoRA for 7–8B models on a 24 GB GPU"),
        N_("4-bit NF4 weights with bf16 compute, batch 2 × 8 accumulation, 2048 tokens."),
        {"adapter": "qlora", "batch_size": 2, "gradient_accumulation_steps": 8, "max_seq_length": 2048},
    ),
    BuiltinPreset(
        "full-small",
        N_("Full fine-tuning of a small model"),
        N_("Every weight trained at a low learning rate; needs about 16 bytes per parameter of GPU memory."),
        {"adapter": "full", "learning_rate": 2e-5, "batch_size": 8, "warmup_ratio": 0.05},
    ),
    BuiltinPreset(
        "dpo-lora",
        N_("DPO with LoRA"),
        N_("Preference pairs, beta 0.1, a learning rate a hundred times lower than SFT's."),
        {"method": "dpo", "learning_rate": 5e-6, "batch_size": 4, "max_seq_length": 1024},
    ),
)


def builtin(key: str) -> BuiltinPreset | None:
    return next((p for p in BUILTIN if p.key == key), None)


def list_presets(session: Session, *, user: User) -> list[TrainingPreset]:
    stmt = select(TrainingPreset).where(TrainingPreset.owner_id == user.id).order_by(TrainingPreset.name)
    return list(session.scalars(stmt))


def get_preset(session: Session, preset_id: uuid.UUID, *, user: User) -> TrainingPreset:
    return get_owned(session, TrainingPreset, preset_id, user=user, message=_("No such preset."))


def save_preset(session: Session, *, user: User, name: str, spec: TrainingSpec) -> TrainingPreset:
    name = name.strip()
    if not name or len(name) > 100:
        raise InvalidInput(_("Give the preset a name of 1 to 100 characters."), field="preset_name")
    preset = TrainingPreset(owner_id=user.id, name=name, spec=spec.model_dump(mode="json"))
    try:
        with session.begin_nested():
            session.add(preset)
            session.flush()
    except IntegrityError as exc:
        raise Conflict(
            _("You already have a preset named %(name)s; choose another name or delete that one.", name=name),
            field="preset_name",
        ) from exc
    return preset


def delete_preset(session: Session, preset: TrainingPreset) -> None:
    session.delete(preset)
    session.flush()


def spec_of(session: Session, key: str, *, user: User) -> TrainingSpec:
    """A preset by its key: a built-in one's name, or the id of one of the user's own."""
    found = builtin(key)
    if found is not None:
        return found.spec()
    from app.jobs.service import parse_spec

    try:
        preset = get_preset(session, uuid.UUID(key), user=user)
    except ValueError as exc:
        raise NotFound(_("No such preset.")) from exc
    return parse_spec(preset.spec)  # a preset saved by an older version names what no longer fits
