"""TrainingSpec: the one documented contract between the form, the APIs and the worker.

Every field carries its help text (shown on hover in the form) and a group: "basic" fields are shown,
"adapter" fields follow the adapter choice, "advanced" fields are folded. Defaults follow common practice
for LoRA SFT of small instruct models (the values LLaMA-Factory and TRL's examples start from).
"""

from __future__ import annotations

import enum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from app.core.i18n import N_


class Method(enum.StrEnum):
    sft = "sft"
    cpt = "cpt"
    dpo = "dpo"


class Adapter(enum.StrEnum):
    lora = "lora"
    qlora = "qlora"
    full = "full"
    freeze = "freeze"
    ia3 = "ia3"
    prompt_tuning = "prompt_tuning"


METHOD_LABELS = {
    "sft": N_("Supervised fine-tuning"),
    "cpt": N_("Continued pre-training"),
    "dpo": N_("DPO (direct preference optimisation)"),
}
ADAPTER_LABELS = {
    "lora": N_("LoRA"),
    "qlora": N_("QLoRA (4-bit NF4, CUDA only)"),
    "full": N_("Full fine-tuning"),
    "freeze": N_("Freeze-tuning (last N layers)"),
    "ia3": N_("IA3"),
    "prompt_tuning": N_("Prompt tuning"),
}
# which dataset kinds each method trains on
METHOD_KINDS = {"sft": {"chat"}, "cpt": {"text", "chat"}, "dpo": {"preference"}}


def _f(default: Any, help_text: str, group: str = "basic", **kwargs: Any) -> Any:
    return Field(default, description=help_text, json_schema_extra={"group": group}, **kwargs)


class TrainingSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", use_enum_values=False)

    method: Method = _f(
        Method.sft,
        N_(
            "What the model learns from: conversations (SFT), raw text (continued "
            "pre-training) or preference pairs (DPO)."
        ),
    )
    adapter: Adapter = _f(
        Adapter.lora,
        N_(
            "Which weights are trained. LoRA trains small low-rank matrices and "
            "fits on modest GPUs; full fine-tuning trains everything."
        ),
    )
    learning_rate: float = _f(
        2e-4,
        N_("Step size. About 1e-4 to 3e-4 for LoRA; 1e-5 to 5e-5 for full fine-tuning; 5e-7 to 5e-6 for DPO."),
        gt=0,
        le=1,
    )
    num_epochs: float = _f(1.0, N_("Passes over the training split (ignored when max steps is set)."), gt=0, le=100)
    max_steps: int = _f(
        0, N_("Stop after this many optimiser steps; 0 means train for the epochs above."), ge=0, le=1_000_000
    )
    batch_size: int = _f(4, N_("Records per device per step."), ge=1, le=1024)
    gradient_accumulation_steps: int = _f(
        1,
        N_("Steps whose gradients are summed before one update: the effective batch is batch size × this."),
        "advanced",
        ge=1,
        le=1024,
    )
    max_seq_length: int = _f(
        1024, N_("Longer records are truncated to this many tokens; must fit the model's context."), ge=16, le=1_048_576
    )
    # --- adapter ------------------------------------------------------------------------------------
    lora_r: int = _f(16, N_("LoRA rank: capacity of the adapter. 8–64 is typical."), "adapter", ge=1, le=1024)
    lora_alpha: int = _f(32, N_("LoRA scaling; usually twice the rank."), "adapter", ge=1, le=4096)
    lora_dropout: float = _f(0.05, N_("Dropout on the LoRA path."), "adapter", ge=0, lt=1)
    lora_target_modules: str = _f(
        "all-linear",
        N_("Layers that get adapters: 'all-linear', or comma-separated names such as q_proj,v_proj."),
        "adapter",
        min_length=1,
        max_length=500,
        pattern=r"^[A-Za-z0-9_.,\- ]+$",
    )
    use_dora: bool = _f(
        False, N_("DoRA: weight-decomposed LoRA, often better at low ranks, a little slower."), "adapter"
    )
    use_rslora: bool = _f(False, N_("Rank-stabilised LoRA scaling (alpha / √r), helps at high ranks."), "adapter")
    qlora_double_quant: bool = _f(
        True, N_("QLoRA: quantise the quantisation constants too (saves ~0.4 bit per parameter)."), "adapter"
    )
    qlora_compute_dtype: Literal["bfloat16", "float16"] = _f(
        "bfloat16", N_("QLoRA: precision of the matrix multiplications."), "adapter"
    )
    freeze_trainable_layers: int = _f(
        2, N_("Freeze-tuning: how many of the last transformer layers are trained."), "adapter", ge=1, le=1000
    )
    num_virtual_tokens: int = _f(20, N_("Prompt tuning: number of trained virtual tokens."), "adapter", ge=1, le=1000)
    # --- advanced -----------------------------------------------------------------------------------
    scheduler: Literal["cosine", "linear", "constant", "constant_with_warmup"] = _f(
        "cosine", N_("How the learning rate changes over training."), "advanced"
    )
    warmup_ratio: float = _f(
        0.03, N_("Fraction of the steps spent ramping the learning rate up."), "advanced", ge=0, le=0.5
    )
    weight_decay: float = _f(0.0, N_("L2 penalty on the weights (AdamW)."), "advanced", ge=0, le=1)
    max_grad_norm: float = _f(
        1.0, N_("Gradient clipping: gradients are scaled down above this norm."), "advanced", gt=0, le=1000
    )
    precision: Literal["auto", "bf16", "fp16", "fp32"] = _f(
        "auto",
        N_("Number format for training. 'auto' picks bf16 on GPUs that support it, else fp32 on CPU."),
        "advanced",
    )
    packing: bool = _f(
        False,
        N_(
            "Pack several short records into one sequence (padding-free, with correct "
            "masks): faster when records are short."
        ),
        "advanced",
    )
    assistant_only_loss: bool = _f(
        True, N_("Learn only from the assistant's turns; the prompts are context."), "advanced"
    )
    eval_steps: int = _f(
        50, N_("Evaluate on the validation split every N steps; 0 disables."), "advanced", ge=0, le=1_000_000
    )
    early_stopping_patience: int = _f(
        0,
        N_("Stop when the validation loss has not improved for this many evaluations; 0 disables."),
        "advanced",
        ge=0,
        le=1000,
    )
    save_steps: int = _f(
        50,
        N_("Write a checkpoint every N steps (resume and cancel keep the last one)."),
        "advanced",
        ge=1,
        le=1_000_000,
    )
    save_total_limit: int = _f(2, N_("How many checkpoints to keep."), "advanced", ge=1, le=100)
    seed: int = _f(42, N_("Random seed for initialisation and shuffling."), "advanced", ge=0, le=2**31 - 1)
    dpo_beta: float = _f(
        0.1, N_("DPO: how far the model may move from the base model (higher = closer)."), "advanced", gt=0, le=10
    )
    cpt_general_ratio: int = _f(
        5,
        N_(
            "Continued pre-training: records of the chosen general-text dataset version mixed in per domain "
            "record, to limit forgetting (0 = none)."
        ),
        "advanced",
        ge=0,
        le=100,
    )

    @model_validator(mode="after")
    def _lora_fields_make_sense(self) -> TrainingSpec:
        if self.use_dora and self.adapter == Adapter.qlora:
            raise ValueError("DoRA with QLoRA is not supported here; turn one of them off.")
        return self

    @property
    def uses_lora(self) -> bool:
        return self.adapter in (Adapter.lora, Adapter.qlora)

    @property
    def effective_batch(self) -> int:
        return self.batch_size * self.gradient_accumulation_steps


def field_groups() -> dict[str, list[tuple[str, Any]]]:
    """Fields in declaration order, grouped for the form."""
    groups: dict[str, list[tuple[str, Any]]] = {"basic": [], "adapter": [], "advanced": []}
    for name, info in TrainingSpec.model_fields.items():
        extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
        groups[str(extra.get("group", "basic"))].append((name, info))
    return groups


class Problem(BaseModel):
    field: str
    message: str


def check_compatibility(
    spec: TrainingSpec, *, kinds: dict[str, int], context_length: int | None, cuda: bool, train_records: int
) -> list[Problem]:
    """Choices that cannot work together, each with the reason and the fix (shown in the form)."""
    from app.core.i18n import _

    problems: list[Problem] = []
    wanted = METHOD_KINDS[spec.method.value]
    usable = sum(n for kind, n in kinds.items() if kind in wanted)
    if not usable:
        have = ", ".join(sorted(k for k, n in kinds.items() if n)) or "—"
        problems.append(
            Problem(
                field="method",
                message=_(
                    "%(method)s needs %(wanted)s records but this dataset version has %(have)s; pick a matching method "
                    "or dataset.",
                    method=spec.method.value.upper(),
                    wanted=" / ".join(sorted(wanted)),
                    have=have,
                ),
            )
        )
    if spec.adapter == Adapter.qlora and not cuda:
        problems.append(
            Problem(
                field="adapter",
                message=_("QLoRA needs a CUDA GPU and this worker has none; choose LoRA, or run it on a GPU worker."),
            )
        )
    if spec.precision in ("bf16", "fp16") and not cuda:
        problems.append(
            Problem(
                field="precision",
                message=_(
                    "%(p)s training needs a GPU here; choose auto or fp32 on a CPU-only worker.", p=spec.precision
                ),
            )
        )
    if context_length and spec.max_seq_length > context_length:
        problems.append(
            Problem(
                field="max_seq_length",
                message=_(
                    "The model's context is %(n)s tokens; lower max sequence length to at most that.", n=context_length
                ),
            )
        )
    if spec.early_stopping_patience and not spec.eval_steps:
        problems.append(
            Problem(
                field="early_stopping_patience",
                message=_("Early stopping watches the validation loss; set eval every N steps above 0."),
            )
        )
    if train_records == 0 and usable:
        problems.append(
            Problem(
                field="method",
                message=_("The train split of this version is empty; change the split ratios of the dataset."),
            )
        )
    if spec.method == Method.dpo and spec.adapter in (Adapter.prompt_tuning,):
        problems.append(
            Problem(
                field="adapter",
                message=_("DPO here supports LoRA, QLoRA, IA3, freeze and full fine-tuning; choose one of those."),
            )
        )
    return problems
