"""One table: each training method, the records it trains on (its data preparation) and its trainer.

The kinds of records each method reads are app/jobs/spec.py's METHOD_KINDS (the web checks a dataset against
the same table before a job is queued); here each method gets the function that turns those records into
trainer rows and the function that builds its TRL trainer from the shared arguments."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from app.jobs.estimate import cpu_pass_size
from app.jobs.spec import METHOD_KINDS, Method, TrainingSpec
from worker.training.data import cpt_rows, dpo_rows, kto_rows, prompt_rows, sft_rows

Rows = Callable[[TrainingSpec, list[dict[str, Any]], Any], list[dict[str, Any]]]
Build = Callable[["Context"], Any]


@dataclass(frozen=True)
class Context:
    """What every trainer is built from."""

    spec: TrainingSpec
    model: Any
    args: dict[str, Any]  # TrainingArguments shared by all methods (train.py's _common_args)
    common: dict[str, Any]  # datasets, tokenizer as processing class, callbacks
    train: Any
    cuda: bool
    reward: tuple[Any, Any] | None


@dataclass(frozen=True)
class MethodPlan:
    rows: Rows
    build: Build
    evaluates: bool = True  # False: evaluating means generating, which the evaluation after the job does
    needs_reward: bool = False  # RL methods score completions with a reward model trained here

    def kinds(self, method: Method) -> set[str]:
        return set(METHOD_KINDS[method.value])


def _sft_rows(spec: TrainingSpec, records: list[dict[str, Any]], renderer: Any) -> list[dict[str, Any]]:
    return sft_rows(records, renderer, max_length=spec.max_seq_length, assistant_only=spec.assistant_only_loss)


def _cpt_rows(spec: TrainingSpec, records: list[dict[str, Any]], renderer: Any) -> list[dict[str, Any]]:
    return cpt_rows(records, renderer, max_length=spec.max_seq_length)


def _pairs(spec: TrainingSpec, records: list[dict[str, Any]], renderer: Any) -> list[dict[str, Any]]:
    return dpo_rows(records)


def _labelled(spec: TrainingSpec, records: list[dict[str, Any]], renderer: Any) -> list[dict[str, Any]]:
    return kto_rows(records)


def _prompts(spec: TrainingSpec, records: list[dict[str, Any]], renderer: Any) -> list[dict[str, Any]]:
    return prompt_rows(records)


def cpu_micro_batches(spec: TrainingSpec, train: Any) -> tuple[int, int]:
    """(records per forward pass, passes per optimizer step) for the same effective batch on a CPU, where a
    step's time grows faster than its tokens once a pass holds more than about a thousand (the activations
    leave the caches and the allocator maps fresh memory every step): see app/jobs/estimate.py's
    cpu_pass_size. The gradients add up to the same step (the loss is normalised by the whole batch's
    tokens)."""
    longest = max((len(ids) for ids in train["input_ids"]), default=1)
    micro = cpu_pass_size(spec.batch_size, longest)
    return micro, spec.gradient_accumulation_steps * (spec.batch_size // micro)


def _sft(ctx: Context) -> Any:
    from trl import SFTConfig, SFTTrainer

    from worker.training.label_logits import LabelLogitsSFTTrainer, supports

    spec, args = ctx.spec, dict(ctx.args)
    packed_passes = not ctx.cuda and not spec.packing and supports(ctx.model)  # label_logits.PackedPasses
    if not ctx.cuda and not packed_passes:  # supervised and continued pre-training rows are tokenised
        micro, passes = cpu_micro_batches(spec, ctx.train)
        args |= {"per_device_train_batch_size": micro, "gradient_accumulation_steps": passes}
    if spec.group_by_length and not spec.packing:
        # batches of similar length pad little: on alpaca-like data the padded batch is half padding otherwise
        args["train_sampling_strategy"] = "group_by_length"
    if spec.neftune_noise_alpha > 0:  # noisy embeddings while training (transformers' NEFTune hook)
        args["neftune_noise_alpha"] = spec.neftune_noise_alpha
    config = SFTConfig(**args, max_length=spec.max_seq_length, packing=spec.packing, dataset_num_proc=None)
    if not ctx.cuda:  # on a CPU: packed passes, and only the learned positions projected (label_logits.py)
        return LabelLogitsSFTTrainer(model=ctx.model, args=config, **ctx.common)
    return SFTTrainer(model=ctx.model, args=config, **ctx.common)


def _dpo(ctx: Context) -> Any:
    from trl import DPOConfig, DPOTrainer

    config = DPOConfig(**ctx.args, beta=ctx.spec.dpo_beta, max_length=ctx.spec.max_seq_length)
    return DPOTrainer(model=ctx.model, args=config, **ctx.common)


def _orpo(ctx: Context) -> Any:
    from trl.experimental.orpo import ORPOConfig, ORPOTrainer

    config = ORPOConfig(**ctx.args, beta=ctx.spec.dpo_beta, max_length=ctx.spec.max_seq_length)
    return ORPOTrainer(model=ctx.model, args=config, **ctx.common)


def _kto(ctx: Context) -> Any:
    from trl import KTOConfig, KTOTrainer

    config = KTOConfig(**ctx.args, beta=ctx.spec.dpo_beta, max_length=ctx.spec.max_seq_length)
    return KTOTrainer(model=ctx.model, args=config, **ctx.common)


def _reward(ctx: Context) -> Any:
    from trl import RewardConfig, RewardTrainer

    config = RewardConfig(**ctx.args, max_length=ctx.spec.max_seq_length)
    return RewardTrainer(model=ctx.model, args=config, **ctx.common)


def _rl(ctx: Context) -> dict[str, Any]:
    assert ctx.reward is not None
    return {
        "model": ctx.model,
        "reward_funcs": ctx.reward[0],
        "reward_processing_classes": ctx.reward[1],
        **ctx.common,
    }


def _rl_args(ctx: Context) -> dict[str, Any]:
    return {
        **ctx.args,
        "num_generations": ctx.spec.num_generations,
        "max_completion_length": ctx.spec.max_completion_length,
        "generation_batch_size": ctx.spec.effective_batch,
    }


def _grpo(ctx: Context) -> Any:
    from trl import GRPOConfig, GRPOTrainer

    return GRPOTrainer(args=GRPOConfig(**_rl_args(ctx)), **_rl(ctx))


def _rloo(ctx: Context) -> Any:
    from trl import RLOOConfig, RLOOTrainer

    return RLOOTrainer(args=RLOOConfig(**_rl_args(ctx)), **_rl(ctx))


PLANS: dict[Method, MethodPlan] = {
    Method.sft: MethodPlan(_sft_rows, _sft),
    Method.cpt: MethodPlan(_cpt_rows, _sft),
    Method.dpo: MethodPlan(_pairs, _dpo),
    Method.orpo: MethodPlan(_pairs, _orpo),
    Method.kto: MethodPlan(_labelled, _kto),
    Method.reward: MethodPlan(_pairs, _reward),
    Method.grpo: MethodPlan(_prompts, _grpo, evaluates=False, needs_reward=True),
    Method.rloo: MethodPlan(_prompts, _rloo, evaluates=False, needs_reward=True),
}
