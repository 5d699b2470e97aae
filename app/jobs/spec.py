"""TrainingSpec: the one documented contract between the form, the APIs and the worker.

Every field carries its help text (shown on hover in the form) and a group: "basic" fields are shown,
"method" and "adapter" fields follow the method and adapter choices, "advanced" fields are folded, and
"linked" fields (another job) get their own select. Defaults follow common practice
for LoRA SFT of small instruct models (the values LLaMA-Factory and TRL's examples start from).
"""

from __future__ import annotations

import enum
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from app.core.i18n import N_


class Method(enum.StrEnum):
    sft = "sft"
    cpt = "cpt"
    dpo = "dpo"
    orpo = "orpo"
    kto = "kto"
    reward = "reward"
    grpo = "grpo"
    rloo = "rloo"


class Adapter(enum.StrEnum):
    lora = "lora"
    qlora = "qlora"
    full = "full"
    freeze = "freeze"
    ia3 = "ia3"
    prompt_tuning = "prompt_tuning"
    prefix_tuning = "prefix_tuning"
    p_tuning = "p_tuning"


METHOD_LABELS = {
    "sft": N_("Supervised fine-tuning"),
    "cpt": N_("Continued pre-training"),
    "dpo": N_("DPO (direct preference optimisation)"),
    "orpo": N_("ORPO (odds-ratio preference optimisation)"),
    "kto": N_("KTO (answers labelled good or bad)"),
    "reward": N_("Reward model (scores answers, for RLHF)"),
    "grpo": N_("GRPO (reinforcement: a grader or a reward model scores the answers)"),
    "rloo": N_("RLOO (reinforcement: a grader or a reward model scores the answers)"),
}
ADAPTER_LABELS = {
    "lora": N_("LoRA"),
    "qlora": N_("QLoRA (4-bit NF4, CUDA only)"),
    "full": N_("Full fine-tuning"),
    "freeze": N_("Freeze-tuning (last N layers)"),
    "ia3": N_("IA3"),
    "prompt_tuning": N_("Prompt tuning"),
    "prefix_tuning": N_("Prefix tuning"),
    "p_tuning": N_("P-tuning"),
}
# which dataset kinds each method trains on (RLHF takes its prompts from conversations or preference pairs)
METHOD_KINDS = {
    "sft": {"chat"},
    "cpt": {"text", "chat"},
    "dpo": {"preference"},
    "orpo": {"preference"},
    "kto": {"kto"},
    "reward": {"preference"},
    "grpo": {"chat", "preference", "prompt"},
    "rloo": {"chat", "preference", "prompt"},
}
# the methods that score their own generations with a reward model trained here
RL_METHODS = frozenset({Method.grpo, Method.rloo})
PROMPT_LEARNING = {Adapter.prompt_tuning, Adapter.prefix_tuning, Adapter.p_tuning}
WEIGHT_ADAPTERS = {Adapter.lora, Adapter.qlora, Adapter.full, Adapter.freeze}
# which adapters each method can train: the preference and RL trainers need a reference model made by
# disabling the adapter, and a reward model needs its score head trained, which prompt learning cannot do
METHOD_ADAPTERS: dict[str, set[Adapter]] = {
    "sft": set(Adapter),
    "cpt": set(Adapter),
    "dpo": WEIGHT_ADAPTERS | {Adapter.ia3},
    "orpo": WEIGHT_ADAPTERS | {Adapter.ia3},
    "kto": WEIGHT_ADAPTERS | {Adapter.ia3},
    "reward": WEIGHT_ADAPTERS,
    "grpo": WEIGHT_ADAPTERS,
    "rloo": WEIGHT_ADAPTERS,
}


# What each method starts from on the job form: choosing a method sets these fields, unless the user has
# changed them (LoRA values; TRL's and the methods' papers' usual starting points).
METHOD_DEFAULTS: dict[str, dict[str, float]] = {
    "sft": {"learning_rate": 2e-4, "num_epochs": 1.0},
    "cpt": {"learning_rate": 1e-4, "num_epochs": 1.0},
    "dpo": {"learning_rate": 5e-6, "num_epochs": 1.0, "dpo_beta": 0.1},
    "orpo": {"learning_rate": 8e-6, "num_epochs": 1.0, "dpo_beta": 0.1},
    "kto": {"learning_rate": 5e-6, "num_epochs": 1.0, "dpo_beta": 0.1},
    "reward": {"learning_rate": 5e-5, "num_epochs": 1.0},
    "grpo": {"learning_rate": 1e-5, "num_epochs": 1.0},
    "rloo": {"learning_rate": 1e-5, "num_epochs": 1.0},
}
# The learning rates each method is usually trained with on a LoRA (full and freeze fine-tuning: a tenth); a
# value outside is flagged beside the field, not refused.
USUAL_LEARNING_RATES: dict[str, tuple[float, float]] = {
    "sft": (1e-5, 1e-3),
    "cpt": (1e-5, 1e-3),
    "dpo": (1e-7, 1e-4),
    "orpo": (1e-7, 1e-4),
    "kto": (1e-7, 1e-4),
    "reward": (1e-6, 5e-4),
    "grpo": (1e-7, 1e-4),
    "rloo": (1e-7, 1e-4),
}
# the method a dataset version's records call for, in this order of preference
METHOD_FOR_KIND = (("chat", "sft"), ("preference", "dpo"), ("kto", "kto"), ("text", "cpt"), ("prompt", "grpo"))


def usual_learning_rates(method: str, adapter: str) -> tuple[float, float]:
    low, high = USUAL_LEARNING_RATES[method]
    if adapter in ("full", "freeze"):
        return low / 10, high / 10
    return low, high


def method_for(kind_counts: dict[str, int]) -> str:
    """The method a version's records train with by default (chat → SFT, pairs → DPO, labelled answers → KTO,
    plain text → continued pre-training, prompts alone → GRPO)."""
    return next((method for kind, method in METHOD_FOR_KIND if kind_counts.get(kind)), "sft")


def _f(default: Any, help_text: str, group: str = "basic", **kwargs: Any) -> Any:
    return Field(default, description=help_text, json_schema_extra={"group": group}, **kwargs)


MAX_MIX_PARTS = 3


class MixPart(BaseModel):
    """Another dataset version mixed into the job's training split."""

    model_config = ConfigDict(extra="forbid")

    version_id: uuid.UUID = Field(description="A dataset version of yours whose records the method can train on.")
    ratio: float = Field(
        gt=0,
        le=10,
        description=(
            "Records drawn from this version per record of the job's dataset (0.5: half as many; 2: twice as "
            "many, repeating records when the version has fewer)."
        ),
    )


class TrainingSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", use_enum_values=False)

    method: Method = _f(
        Method.sft,
        N_(
            "What the model learns from: conversations (SFT), raw text (continued pre-training), preference "
            "pairs (DPO, ORPO, reward model), answers labelled good or bad (KTO), or the scores of a reward "
            "model trained here (GRPO, RLOO)."
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
    num_virtual_tokens: int = _f(
        20, N_("Prompt, prefix and P-tuning: number of trained virtual tokens."), "adapter", ge=1, le=1000
    )
    encoder_hidden_size: int = _f(
        128,
        N_("P-tuning: hidden size of the prompt encoder (an MLP) that produces the virtual tokens."),
        "adapter",
        ge=8,
        le=16384,
    )
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
    group_by_length: bool = _f(
        True,
        N_(
            "Batch records of similar length together (supervised and continued pre-training): far less padding, "
            "so faster and lighter; the batches still come in random order."
        ),
        "advanced",
    )
    assistant_only_loss: bool = _f(
        True, N_("Learn only from the assistant's turns; the prompts are context."), "advanced"
    )
    eval_steps: int = _f(
        50, N_("Evaluate on the validation split every N steps; 0 disables."), "advanced", ge=0, le=1_000_000
    )
    max_eval_records: int = _f(
        200,
        N_("Score at most this many validation records at each evaluation (a seeded sample); 0 scores them all."),
        "advanced",
        ge=0,
        le=1_000_000,
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
    mlflow_experiment: str = _f(
        "",
        N_("MLflow: the experiment this job's run goes under; empty means the dataset's name."),
        "advanced",
        max_length=200,
    )
    mlflow_tracking_uri: str = _f(
        "",
        N_("MLflow: another tracking server for this job (http:// or https://); empty means the install's, if any."),
        "advanced",
        max_length=500,
        pattern=r"^(https?://[^\s]+)?$",
    )
    dpo_beta: float = _f(
        0.1,
        N_(
            "DPO and KTO: how far the model may move from the base model (higher = closer); ORPO: the weight "
            "of the odds-ratio term."
        ),
        "method",
        gt=0,
        le=10,
    )
    reward_job_id: str = _f(
        "",
        N_("GRPO and RLOO: the succeeded reward-model job whose model scores the generated answers."),
        "linked",
        max_length=36,
        pattern=r"^[0-9a-fA-F-]*$",
    )
    mix: list[MixPart] = _f(
        [],
        N_(
            "Other dataset versions mixed into the training split, each with a ratio: records drawn from it per "
            "record of the job's dataset. Any method; each version must hold records the method trains on."
        ),
        "linked",
        max_length=MAX_MIX_PARTS,
    )
    start_from_job_id: str = _f(
        "",
        N_(
            "Start from the LoRA adapter of one of your succeeded jobs on the same base model and train it further "
            "(its rank, alpha and target modules are kept): for example reinforcement after supervised "
            "fine-tuning. Empty: a new adapter."
        ),
        "linked",
        max_length=36,
        pattern=r"^[0-9a-fA-F-]*$",
    )
    grader: dict[str, Any] | None = _f(
        None,
        N_(
            "GRPO and RLOO: a grader (OpenAI's grader object: string_check, text_similarity, python, or multi of "
            "those) whose score of each generated answer is the reward, instead of a reward model: reinforcement "
            "fine-tuning. Templates read the record as item (its other fields, and its answer as item.reference)."
        ),
        "linked",
    )
    num_generations: int = _f(
        4,
        N_(
            "GRPO and RLOO: answers generated per prompt and compared with each other; the batch size × "
            "gradient accumulation must be a multiple of it."
        ),
        "method",
        ge=2,
        le=64,
    )
    max_completion_length: int = _f(
        128, N_("GRPO and RLOO: longest generated answer, in tokens."), "method", ge=1, le=32768
    )
    neftune_noise_alpha: float = _f(
        0.0,
        N_(
            "NEFTune: uniform noise added to the token embeddings while training, scaled by this value (5 is "
            "the paper's usual setting); often better answers from supervised fine-tuning. 0 turns it off."
        ),
        "method",
        ge=0,
        le=50,
    )
    cpt_general_ratio: int = _f(
        5,
        N_(
            "Continued pre-training: records of the chosen general-text dataset version mixed in per domain "
            "record, to limit forgetting (0 = none)."
        ),
        "method",
        ge=0,
        le=100,
    )

    num_gpus: int = _f(
        1,
        N_(
            "GPUs on the worker to train on. Above 1 the worker starts the training with 'accelerate launch' "
            "and the strategy below."
        ),
        "advanced",
        ge=1,
        le=64,
    )
    distributed: Literal["ddp", "fsdp", "deepspeed_zero2", "deepspeed_zero3"] = _f(
        "ddp",
        N_(
            "Multi-GPU strategy: DDP copies the model to each GPU; FSDP and DeepSpeed ZeRO-3 shard weights, "
            "gradients and optimiser states (for models that do not fit one GPU); ZeRO-2 shards the last two."
        ),
        "advanced",
    )

    @field_validator("grader")
    @classmethod
    def _grader_is_one(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is None:
            return None
        from app.graders.rewards import reward_grader

        return reward_grader(value)

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
    groups: dict[str, list[tuple[str, Any]]] = {"basic": [], "method": [], "adapter": [], "advanced": []}
    for name, info in TrainingSpec.model_fields.items():
        extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
        group = str(extra.get("group", "basic"))
        if group in groups:  # "linked" fields (another job, a dataset) have their own selects in the form
            groups[group].append((name, info))
    return groups


class Problem(BaseModel):
    field: str
    message: str


def learning_rate_warning(spec: TrainingSpec) -> Problem | None:
    """A learning rate far outside what the method usually trains with: a warning beside the field."""
    from app.core.i18n import _

    low, high = usual_learning_rates(spec.method.value, spec.adapter.value)
    if low <= spec.learning_rate <= high:
        return None
    usual = METHOD_DEFAULTS[spec.method.value]["learning_rate"] / (
        10 if spec.adapter.value in ("full", "freeze") else 1
    )
    return Problem(
        field="learning_rate",
        message=_(
            "A learning rate of %(lr)s is far %(side)s what %(method)s usually trains with (%(low)s to %(high)s); "
            "%(usual)s is the usual start.",
            lr=f"{spec.learning_rate:g}",
            side=_("above") if spec.learning_rate > high else _("below"),
            method=spec.method.value.upper(),
            low=f"{low:g}",
            high=f"{high:g}",
            usual=f"{usual:g}",
        ),
    )


def check_compatibility(
    spec: TrainingSpec, *, kinds: dict[str, int], context_length: int | None, cuda: bool, train_records: int
) -> list[Problem]:
    """Choices that cannot work together, each with the reason and the fix (shown in the form)."""
    from app.core.i18n import _

    problems: list[Problem] = []
    if spec.neftune_noise_alpha > 0 and spec.method not in (Method.sft, Method.cpt):
        problems.append(
            Problem(
                field="neftune_noise_alpha",
                message=_(
                    "NEFTune adds noise to supervised training and continued pre-training only; set it to 0 for "
                    "%(method)s.",
                    method=spec.method.value.upper(),
                ),
            )
        )
    wanted = METHOD_KINDS[spec.method.value]
    usable = sum(n for kind, n in kinds.items() if kind in wanted)
    if not usable and spec.method == Method.kto:
        problems.append(
            Problem(
                field="method",
                message=_(
                    "KTO learns from answers labelled good or bad, and this dataset version has no labelled "
                    "records; upload records with 'messages' and a true/false 'label', or choose SFT or DPO."
                ),
            )
        )
    elif not usable:
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
    allowed = METHOD_ADAPTERS[spec.method.value]
    if spec.adapter not in allowed:
        problems.append(
            Problem(
                field="adapter",
                message=_(
                    "%(method)s trains with %(allowed)s; choose one of those adapters.",
                    method=spec.method.value.upper(),
                    allowed=", ".join(a.value for a in Adapter if a in allowed),
                ),
            )
        )
    if spec.grader is not None and spec.method not in RL_METHODS:
        problems.append(
            Problem(
                field="grader",
                message=_("A reward grader drives GRPO or RLOO; pick one of those methods, or no grader."),
            )
        )
    if spec.method in RL_METHODS:
        if spec.grader is not None and spec.reward_job_id:
            problems.append(
                Problem(
                    field="grader",
                    message=_("Pick either a reward model or a reward grader, not both."),
                )
            )
        if not spec.reward_job_id and spec.grader is None:
            problems.append(
                Problem(
                    field="reward_job_id",
                    message=_(
                        "%(method)s needs a reward: a grader of yours (reinforcement fine-tuning), or a reward "
                        "model trained first with the method 'Reward model' on preference pairs; pick one here.",
                        method=spec.method.value.upper(),
                    ),
                )
            )
        if spec.effective_batch % spec.num_generations:
            problems.append(
                Problem(
                    field="num_generations",
                    message=_(
                        "Batch size × gradient accumulation (%(batch)s) must be a multiple of the answers per "
                        "prompt (%(n)s); change one of them.",
                        batch=spec.effective_batch,
                        n=spec.num_generations,
                    ),
                )
            )
    if spec.num_gpus > 1 and not cuda:
        problems.append(
            Problem(
                field="num_gpus",
                message=_("Training on several GPUs needs GPU workers; set GPUs to 1 on a CPU-only worker."),
            )
        )
    return problems
