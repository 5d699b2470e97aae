"""The new-job form is rendered from TrainingSpec: one input per field, its help text on hover."""

from __future__ import annotations

import enum
import typing
from dataclasses import dataclass
from typing import Any

import yaml
from annotated_types import Ge, Gt, Le, Lt

from app.core.i18n import N_, gettext
from app.jobs.spec import ADAPTER_LABELS, MAX_MIX_PARTS, METHOD_LABELS, TrainingSpec, field_groups

LABELS: dict[str, str] = {
    "method": N_("Method"),
    "adapter": N_("Adapter"),
    "learning_rate": N_("Learning rate"),
    "num_epochs": N_("Epochs"),
    "max_steps": N_("Max steps"),
    "batch_size": N_("Batch size"),
    "gradient_accumulation_steps": N_("Gradient accumulation"),
    "max_seq_length": N_("Max sequence length"),
    "lora_r": N_("LoRA rank"),
    "lora_alpha": N_("LoRA alpha"),
    "lora_dropout": N_("LoRA dropout"),
    "lora_target_modules": N_("Target modules"),
    "use_dora": N_("DoRA"),
    "use_rslora": N_("rsLoRA"),
    "qlora_double_quant": N_("Double quantisation"),
    "qlora_compute_dtype": N_("Compute dtype"),
    "freeze_trainable_layers": N_("Trainable last layers"),
    "num_virtual_tokens": N_("Virtual tokens"),
    "encoder_hidden_size": N_("Prompt encoder size"),
    "num_generations": N_("Answers per prompt"),
    "max_completion_length": N_("Longest answer (tokens)"),
    "num_gpus": N_("GPUs"),
    "distributed": N_("Multi-GPU strategy"),
    "scheduler": N_("Scheduler"),
    "warmup_ratio": N_("Warm-up ratio"),
    "weight_decay": N_("Weight decay"),
    "max_grad_norm": N_("Gradient clipping"),
    "precision": N_("Precision"),
    "packing": N_("Packing"),
    "group_by_length": N_("Group by length"),
    "assistant_only_loss": N_("Assistant-only loss"),
    "eval_steps": N_("Eval every N steps"),
    "max_eval_records": N_("Validation records per eval"),
    "early_stopping_patience": N_("Early stopping patience"),
    "save_steps": N_("Checkpoint every N steps"),
    "save_total_limit": N_("Checkpoints kept"),
    "seed": N_("Seed"),
    "mlflow_experiment": N_("MLflow experiment"),
    "mlflow_tracking_uri": N_("MLflow tracking URI"),
    "dpo_beta": N_("Beta"),
    "cpt_general_ratio": N_("General text per domain record"),
    "neftune_noise_alpha": N_("NEFTune noise"),
}
# which adapter each adapter-group field belongs to (the form shows them with that adapter)
ADAPTER_FIELDS = {
    "lora_r": "lora qlora",
    "lora_alpha": "lora qlora",
    "lora_dropout": "lora qlora",
    "lora_target_modules": "lora qlora",
    "use_dora": "lora",
    "use_rslora": "lora qlora",
    "qlora_double_quant": "qlora",
    "qlora_compute_dtype": "qlora",
    "freeze_trainable_layers": "freeze",
    "num_virtual_tokens": "prompt_tuning prefix_tuning p_tuning",
    "encoder_hidden_size": "p_tuning",
}
# which methods each method-group field belongs to (the form shows them with that method)
METHOD_FIELDS = {
    "dpo_beta": "dpo orpo kto",
    "num_generations": "grpo rloo",
    "max_completion_length": "grpo rloo",
    "cpt_general_ratio": "cpt",
    "neftune_noise_alpha": "sft cpt",
}


@dataclass(frozen=True)
class FormField:
    name: str
    label: str
    help: str
    kind: str  # select | checkbox | number | text
    value: Any
    options: list[tuple[str, str]]
    minimum: float | None
    maximum: float | None
    step: str
    adapters: str
    methods: str


def _options(annotation: Any) -> list[tuple[str, str]]:
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        labels = METHOD_LABELS if annotation.__name__ == "Method" else ADAPTER_LABELS
        return [(m.value, gettext(labels.get(m.value, m.value))) for m in annotation]
    return [(str(v), str(v)) for v in typing.get_args(annotation)]


def form_fields(values: TrainingSpec | None = None) -> dict[str, list[FormField]]:
    current = (values or TrainingSpec()).model_dump(mode="json")
    grouped: dict[str, list[FormField]] = {}
    for group, fields in field_groups().items():
        out = []
        for name, info in fields:
            annotation = info.annotation
            bounds = {type(m): m for m in info.metadata}
            minimum = next((getattr(bounds[t], a) for t, a in ((Ge, "ge"), (Gt, "gt")) if t in bounds), None)
            maximum = next((getattr(bounds[t], a) for t, a in ((Le, "le"), (Lt, "lt")) if t in bounds), None)
            if annotation is bool:
                kind = "checkbox"
            elif (isinstance(annotation, type) and issubclass(annotation, enum.Enum)) or typing.get_origin(
                annotation
            ) is typing.Literal:
                kind = "select"
            elif annotation in (int, float):
                kind = "number"
            else:
                kind = "text"
            out.append(
                FormField(
                    name=name,
                    label=gettext(LABELS.get(name, name)),
                    help=gettext(info.description or ""),
                    kind=kind,
                    value=current[name],
                    options=_options(annotation) if kind == "select" else [],
                    minimum=minimum,
                    maximum=maximum,
                    step="1" if annotation is int else "any",
                    adapters=ADAPTER_FIELDS.get(name, ""),
                    methods=METHOD_FIELDS.get(name, ""),
                )
            )
        grouped[group] = out
    return grouped


def spec_from_form(form: dict[str, str]) -> dict[str, Any]:
    """Form strings into spec values; checkboxes are absent when off."""
    raw: dict[str, Any] = {}
    for name, info in TrainingSpec.model_fields.items():
        if name == "grader":  # a cloned job's grader travels as JSON in a hidden field
            if form.get("grader"):
                raw["grader"] = _grader_json(form["grader"])
        elif name == "mix":  # rows of a dataset version and its ratio
            raw["mix"] = mix_from_form(form)
        elif info.annotation is bool:
            raw[name] = form.get(name) in ("on", "true", "1")
        elif name in form and form[name] != "":
            raw[name] = form[name]
    return raw


def mix_from_form(form: dict[str, str]) -> list[dict[str, str]]:
    """The form's mix rows (``mix_version_N`` and ``mix_ratio_N``) that name a version; a missing ratio is 1."""
    rows = []
    for n in range(1, MAX_MIX_PARTS + 1):
        version = form.get(f"mix_version_{n}", "").strip()
        if version:
            rows.append({"version_id": version, "ratio": form.get(f"mix_ratio_{n}", "").strip() or "1"})
    return rows


def mix_rows(values: TrainingSpec | None, form: dict[str, str]) -> list[dict[str, str]]:
    """The mix rows the form shows: the form's own (sent back with an error), else the spec's (a clone)."""
    rows = mix_from_form(form) or [
        {"version_id": str(part.version_id), "ratio": f"{part.ratio:g}"} for part in (values.mix if values else [])
    ]
    return rows + [{"version_id": "", "ratio": ""}] * (MAX_MIX_PARTS - len(rows))


def _grader_json(text: str) -> Any:
    import json

    from app.core.errors import InvalidInput

    try:
        return json.loads(text)
    except ValueError:
        raise InvalidInput(
            gettext("The reward grader is not valid JSON; pick a grader again."), field="grader"
        ) from None


def spec_to_yaml(spec: TrainingSpec) -> str:
    header = "# Refinery training spec: import it on the New job page, or send it as 'spec' to /api/v1/jobs\n"
    return header + yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False, allow_unicode=True)


def spec_from_yaml(raw: bytes) -> TrainingSpec:
    """Safe YAML only (no tags, no objects); unknown or bad fields name themselves."""
    from app.core.errors import InvalidInput
    from app.jobs.service import parse_spec

    try:
        loaded = yaml.safe_load(raw.decode("utf-8"))
    except (UnicodeDecodeError, yaml.YAMLError) as exc:
        raise InvalidInput(
            gettext("The file is not valid YAML: %(msg)s", msg=str(exc)[:200]), field="spec_file"
        ) from exc
    if not isinstance(loaded, dict):
        raise InvalidInput(gettext("The YAML must be a mapping of spec fields."), field="spec_file")
    return parse_spec(loaded)
