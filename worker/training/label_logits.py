"""Supervised training on a CPU: each step's records packed padding-free into passes, and only the positions that
are learned projected through the output layer.

**Packed passes.** A step's records (the batch) are packed, longest first, into passes of at most
``CPU_PASS_TOKENS`` tokens (app/jobs/estimate.py; a longer record is a pass of its own), each pass one row with
``position_ids`` restarting at every record: no padding, few and full passes instead of many small ones, and
the activations of one pass alive at a time (a backward pass follows each forward). The gradients add up to
the same step: each pass's loss is divided by the step's learned-token count. Attention runs record by record
(``segment_attention``: causal SDPA on each record's slice, registered with transformers as
``refinery_segments`` and switched on only for these passes): transformers' own handling of packed rows
builds a dense block-diagonal mask, whose masked SDPA is a quarter slower on a CPU than the causal kernel.

A causal language model's loss needs the vocabulary's logits only where the next token is a label; with the
prompt masked (``assistant_only_loss``) that is about half of the tokens of an instruction record, and on a CPU
the output layer and its softmax over SmolLM2's 49,152 words take about a third of a training pass. TRL's fused
head scores every position on a CPU (it packs only the learned ones on Triton devices) and also computes each
position's entropy, which nothing here reads. This trainer runs the backbone, gathers the hidden states of the
learned positions, and takes the cross-entropy over those alone: the same loss, normalised by the same token
count, measured in bench/training_throughput.py. The token accuracy TRL logs (OpenAI's results file reports it)
comes from the same logits.

Models whose adapter feeds virtual tokens (prefix, prompt and P-tuning) go through TRL's own loss and
batching: their forward is PEFT's, not the backbone's, and their virtual tokens would be shared by packed
records. Evaluation batches with TRL's collator."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import torch
from peft import PeftModel
from trl import SFTTrainer

from app.jobs.estimate import CPU_PASS_TOKENS

PROMPT_LEARNING = ("PREFIX_TUNING", "P_TUNING", "PROMPT_TUNING")


def supports(model: Any) -> bool:
    """Whether the backbone can be called directly: a plain model or an adapter that lives inside its layers."""
    if isinstance(model, PeftModel):
        return not any(str(c.peft_type).split(".")[-1] in PROMPT_LEARNING for c in model.peft_config.values())
    return hasattr(model, "get_output_embeddings") and hasattr(model, getattr(model, "base_model_prefix", ""))


def learned_positions_loss(
    model: Any, inputs: dict[str, Any], num_items: Any
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(loss, correct top-1 predictions, learned tokens) for one pass, the loss summed over the learned tokens
    and divided by ``num_items`` (the whole optimizer step's count, as the Trainer's gradient accumulation
    expects) or, without it, by this pass's own count."""
    base = model.get_base_model() if isinstance(model, PeftModel) else model
    backbone = getattr(base, base.base_model_prefix)
    forward = {k: v for k, v in inputs.items() if k in ("input_ids", "attention_mask", "position_ids")}
    hidden = backbone(**forward, use_cache=False).last_hidden_state[:, :-1]
    labels = inputs["labels"][:, 1:]
    mask = labels != -100
    targets = labels[mask]
    logits = base.get_output_embeddings()(hidden[mask]).float()
    total = torch.nn.functional.cross_entropy(logits, targets, reduction="sum")
    count = mask.sum()
    divisor = torch.as_tensor(count if num_items is None else num_items, device=total.device).clamp(min=1)
    with torch.no_grad():
        correct = (logits.argmax(dim=-1) == targets).sum()
    return total / divisor, correct, count


@dataclass(frozen=True)
class PackedPasses:
    """The collator: a batch of tokenised records as one padding-free row, its records grouped into passes.

    Returns ``input_ids``, ``labels`` (the first label of every record masked, so no record learns from the one
    before it), ``position_ids``, ``attention_mask`` (ones: the Trainer counts the tokens seen with it; the
    passes leave it out) and ``pass_bounds``, the offsets where passes begin and the last one ends."""

    budget: int = CPU_PASS_TOKENS

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        order = sorted(range(len(examples)), key=lambda i: -len(examples[i]["input_ids"]))
        passes: list[list[int]] = []  # first fit, longest first
        room: list[int] = []
        for i in order:
            size = len(examples[i]["input_ids"])
            fit = next((k for k, left in enumerate(room) if left >= size), None)
            if fit is None:
                passes.append([i])
                room.append(max(self.budget, size) - size)
            else:
                passes[fit].append(i)
                room[fit] -= size
        ids: list[int] = []
        labels: list[int] = []
        positions: list[int] = []
        bounds = [0]
        for members in passes:
            for i in members:
                record = examples[i]["input_ids"]
                ids += record
                labels += [-100, *list(examples[i].get("labels", record))[1:]]
                positions += range(len(record))
            bounds.append(len(ids))
        return {
            "input_ids": torch.tensor([ids]),
            "labels": torch.tensor([labels]),
            "position_ids": torch.tensor([positions]),
            "attention_mask": torch.ones(1, len(ids), dtype=torch.long),
            "pass_bounds": torch.tensor(bounds),
        }


SEGMENTS = "refinery_segments"


def segment_attention(
    module: Any, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, attention_mask: Any, **kwargs: Any
) -> tuple[torch.Tensor, None]:
    """Attention for one packed row: each record (a run of ``position_ids`` from 0) attends causally to itself
    alone. Shapes as transformers' attention functions take and give them: (batch, heads, tokens, dim) in,
    (batch, tokens, heads, dim) out."""
    starts = [*(kwargs["position_ids"][0] == 0).nonzero().flatten().tolist(), query.shape[2]]
    pieces = [
        torch.nn.functional.scaled_dot_product_attention(
            query[:, :, a:b],
            key[:, :, a:b],
            value[:, :, a:b],
            dropout_p=kwargs.get("dropout", 0.0),
            is_causal=True,
            scale=kwargs.get("scaling"),
            enable_gqa=key.shape[1] != query.shape[1],
        )
        for a, b in itertools.pairwise(starts)
    ]
    return torch.cat(pieces, dim=2).transpose(1, 2).contiguous(), None


def _register() -> None:
    from transformers import AttentionInterface

    AttentionInterface.register(SEGMENTS, segment_attention)


_register()


class LabelLogitsSFTTrainer(SFTTrainer):  # type: ignore[misc]
    """TRL's SFTTrainer with the passes and the loss above while training; evaluation, and models that cannot
    take them, use TRL's collator and loss."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.evaluation_collator: Any = getattr(self, "data_collator")  # noqa: B009  (set by Trainer, untyped)
        self.packs = supports(self.model) and not self.args.packing  # packed by TRL already: its rows stay
        if self.packs:
            self.data_collator = PackedPasses()

    def evaluate(self, *args: Any, **kwargs: Any) -> Any:
        training_collator, self.data_collator = self.data_collator, self.evaluation_collator
        try:
            return super().evaluate(*args, **kwargs)
        finally:
            self.data_collator = training_collator

    def training_step(self, model: Any, inputs: dict[str, Any], num_items_in_batch: Any = None) -> torch.Tensor:
        if "pass_bounds" not in inputs:
            return super().training_step(model, inputs, num_items_in_batch)
        model.train()
        if hasattr(self.optimizer, "train") and callable(self.optimizer.train):
            self.optimizer.train()
        inputs = self._prepare_inputs(inputs)
        bounds = [int(b) for b in inputs["pass_bounds"]]
        if num_items_in_batch is None:  # a step's gradients add up over its passes and accumulated batches
            num_items_in_batch = int((inputs["labels"][:, 1:] != -100).sum()) * self.current_gradient_accumulation_steps
        total = torch.zeros(())
        config = self.accelerator.unwrap_model(model).config
        attention, config._attn_implementation = config._attn_implementation, SEGMENTS
        try:
            for start, end in itertools.pairwise(bounds):
                piece = {key: inputs[key][:, start:end] for key in ("input_ids", "labels", "position_ids")}
                with self.compute_loss_context_manager():
                    loss = self.compute_loss(model, piece, num_items_in_batch=num_items_in_batch)
                self.accelerator.backward(loss)
                total += loss.detach()
        finally:
            config._attn_implementation = attention
        self._count_tokens(inputs)
        return total

    def _count_tokens(self, inputs: dict[str, Any]) -> None:
        mask = inputs.get("attention_mask")
        self._total_train_tokens += int(mask.sum()) if mask is not None else int(inputs["input_ids"].numel())
        self._metrics["train"]["num_tokens"] = [self._total_train_tokens]

    def compute_loss(
        self, model: Any, inputs: dict[str, Any], return_outputs: bool = False, num_items_in_batch: Any = None
    ) -> Any:
        if return_outputs or not model.training or not supports(self.accelerator.unwrap_model(model)):
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        loss, correct, count = learned_positions_loss(self.accelerator.unwrap_model(model), inputs, num_items_in_batch)
        if self.args.average_tokens_across_devices and num_items_in_batch is not None:
            loss = loss * self.accelerator.num_processes  # as the Trainer's own loss: gradients are averaged
        self._metrics["train"]["mean_token_accuracy"].append(float(correct) / max(1, int(count)))
        if not self.packs:  # a packed step counts its tokens once, in training_step
            self._count_tokens(inputs)
        return loss
