"""Peak training memory and time, before launch.

Memory = weights + gradients + optimiser states + activations (+ a fixed CUDA/framework overhead):

* weights: 2 bytes/parameter in 16-bit, 4 in fp32, ~0.55 for 4-bit NF4 with double quantisation (QLoRA, whose
  embeddings and output layer stay in 16-bit: bitsandbytes quantises the linear layers inside the blocks);
* trainable parameters (adapter or all): gradients in the training precision and AdamW's two fp32
  moments (8 bytes), plus an fp32 master copy (4 bytes) when full fine-tuning runs in mixed precision —
  16 bytes per trained parameter in all, the figure behind "full fine-tuning of a 7B model needs ~112 GB";
* activations kept for the backward pass on a GPU, where training checkpoints them (worker/training/train.py,
  every adapter but prefix tuning): each layer's input (``batch × sequence × hidden`` values) plus one layer's
  full set while it is recomputed, ``batch × sequence × hidden × 34`` bytes in 16-bit (Korthikanti et al.'s
  per-layer count, attention scores excluded because SDPA/flash attention does not store them); without
  checkpointing, that full set for every layer; plus the fp32 logits for the loss;
* on a CPU (fp32), measured rather than taken from the literature: about 60 fp32 values per hidden unit,
  layer and token of a forward pass (bench/results/memory_estimate.md: SmolLM2 with LoRA on every linear
  layer, allocator slack included), counted for one pass of the batch as the CPU runs it
  (``cpu_pass_size``), plus the libraries (torch and the rest: about 0.55 GB).

Checked against the published 7B figures, in GB (tests/jobs/test_spec_and_estimate.py): LoRA in 16-bit
≈ 16 GB, QLoRA ≈ 6 GB, full fine-tuning with AdamW in mixed precision ≈ 80–120 GB; on a GPU by bench/gpu.py.
"""

from __future__ import annotations

from dataclasses import dataclass

from app.jobs.spec import Adapter, Method, TrainingSpec

GIB = 1024**3
OVERHEAD_BYTES = 0.5 * GIB  # CUDA context, allocator slack, framework buffers
CPU_LIBRARIES_BYTES = 0.55 * GIB  # torch, transformers, PEFT, TRL and datasets imported (measured)
ACTIVATION_FACTOR = 34
CPU_ACTIVATION_VALUES = 60  # fp32 values per hidden unit, layer and token (measured, see the docstring)
PASSED_METHODS = (Method.sft, Method.cpt)  # the methods whose CPU batches run as passes (cpu_pass_size)
REFERENCE_METHODS = (Method.dpo, Method.kto)


@dataclass(frozen=True)
class ModelShape:
    parameters: int
    hidden_size: int
    layers: int
    vocab_size: int
    intermediate_size: int | None = None


@dataclass(frozen=True)
class MemoryEstimate:
    weights: float
    gradients: float
    optimizer: float
    activations: float
    overhead: float
    trainable_parameters: int

    @property
    def total(self) -> float:
        return self.weights + self.gradients + self.optimizer + self.activations + self.overhead

    def as_gib(self) -> dict[str, float]:
        return {
            name: round(getattr(self, name) / GIB, 2)
            for name in ("weights", "gradients", "optimizer", "activations", "overhead", "total")
        }


def lora_parameters(shape: ModelShape, rank: int) -> int:
    """All-linear LoRA: r × (in + out) per adapted matrix, 4 attention + 3 MLP matrices per layer."""
    hidden = shape.hidden_size
    intermediate = shape.intermediate_size or 4 * hidden
    per_layer = rank * (4 * (hidden + hidden) + 3 * (hidden + intermediate))
    return per_layer * shape.layers


def trainable_parameters(spec: TrainingSpec, shape: ModelShape) -> int:
    if spec.adapter in (Adapter.lora, Adapter.qlora):
        return lora_parameters(shape, spec.lora_r)
    if spec.adapter == Adapter.full:
        return shape.parameters
    if spec.adapter == Adapter.freeze:
        return int(shape.parameters * min(1.0, spec.freeze_trainable_layers / max(1, shape.layers)))
    if spec.adapter == Adapter.ia3:
        return shape.layers * 3 * shape.hidden_size
    if spec.adapter == Adapter.prefix_tuning:  # a key and a value vector per virtual token and layer
        return spec.num_virtual_tokens * shape.layers * 2 * shape.hidden_size
    if spec.adapter == Adapter.p_tuning:  # the virtual tokens plus their MLP encoder
        encoder = spec.encoder_hidden_size
        return spec.num_virtual_tokens * shape.hidden_size + 2 * shape.hidden_size * encoder + encoder * encoder
    return spec.num_virtual_tokens * shape.hidden_size  # prompt tuning


CPU_PASS_TOKENS = 1024


def cpu_pass_size(batch_size: int, longest: int) -> int:
    """Records per forward pass on a CPU: the largest divisor of the batch whose passes hold at most
    CPU_PASS_TOKENS of the longest record (one record when even that is longer). Past about a thousand tokens
    a pass gets slower per token on a CPU (bench/training_throughput.py); the passes add up to the same
    optimizer step."""
    fits = max(1, CPU_PASS_TOKENS // max(longest, 1))
    return max(d for d in range(1, batch_size + 1) if batch_size % d == 0 and d <= fits)


def checkpointed(spec: TrainingSpec) -> bool:
    """Whether training on a GPU recomputes activations (worker/training/train.py's gradient_checkpointing):
    prefix tuning feeds its prefix as past key/values, which activation checkpointing drops."""
    return spec.adapter != Adapter.prefix_tuning


def estimate_memory(spec: TrainingSpec, shape: ModelShape, *, gpu: bool = True) -> MemoryEstimate:
    sixteen_bit = gpu and spec.precision != "fp32"
    weight_bytes = 0.55 if spec.adapter == Adapter.qlora else (2.0 if sixteen_bit else 4.0)
    trainable = trainable_parameters(spec, shape)
    grad_bytes = 2.0 if sixteen_bit else 4.0
    master = 4.0 if (spec.adapter == Adapter.full and sixteen_bit) else 0.0
    tokens = spec.batch_size * spec.max_seq_length
    if gpu:
        scale = 1.0 if sixteen_bit else 2.0  # ACTIVATION_FACTOR counts bytes in 16-bit
        # checkpointed: the layers' inputs, and one layer's activations while it is recomputed
        per_token = shape.layers * (2.0 if checkpointed(spec) else ACTIVATION_FACTOR)
        per_token += ACTIVATION_FACTOR if checkpointed(spec) else 0
        activations = tokens * shape.hidden_size * per_token * scale
    else:
        if spec.method in PASSED_METHODS:
            tokens = cpu_pass_size(spec.batch_size, spec.max_seq_length) * spec.max_seq_length
        activations = tokens * shape.hidden_size * shape.layers * CPU_ACTIVATION_VALUES * 4.0
    activations += tokens * shape.vocab_size * 4  # fp32 logits for the loss
    weights = shape.parameters * weight_bytes
    if spec.adapter == Adapter.qlora:  # the embeddings and the output layer are not quantised
        embeddings = min(shape.parameters, 2 * shape.vocab_size * shape.hidden_size)
        weights = (shape.parameters - embeddings) * weight_bytes + embeddings * 2.0
    if spec.method in REFERENCE_METHODS and spec.adapter in (Adapter.full, Adapter.freeze):
        weights *= 2  # a frozen reference copy (adapters get theirs by switching the adapter off)
    return MemoryEstimate(
        weights=weights,
        gradients=trainable * grad_bytes,
        optimizer=trainable * (8.0 + master),
        activations=activations,
        overhead=OVERHEAD_BYTES if gpu else CPU_LIBRARIES_BYTES,
        trainable_parameters=trainable,
    )


def smaller_configuration(spec: TrainingSpec, shape: ModelShape, budget_bytes: float) -> TrainingSpec | None:
    """A configuration that fits the budget: QLoRA/LoRA, smaller batches with accumulation, shorter sequences."""
    candidate = spec
    steps: list[dict[str, object]] = []
    if spec.adapter in (Adapter.full, Adapter.freeze):
        steps.append({"adapter": Adapter.lora})
    steps += [{"adapter": Adapter.qlora, "use_dora": False}]
    for update in steps:
        if estimate_memory(candidate, shape).total <= budget_bytes:
            return candidate
        candidate = candidate.model_copy(update=update)
    while estimate_memory(candidate, shape).total > budget_bytes:
        if candidate.batch_size > 1:
            candidate = candidate.model_copy(
                update={
                    "batch_size": candidate.batch_size // 2,
                    "gradient_accumulation_steps": candidate.gradient_accumulation_steps * 2,
                }
            )
        elif candidate.max_seq_length > 256:
            candidate = candidate.model_copy(update={"max_seq_length": candidate.max_seq_length // 2})
        else:
            return None
    return candidate
