"""TrainingSpec validation, refusals of incompatible choices, and the memory estimate vs published figures."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from app.jobs.estimate import GIB, ModelShape, estimate_memory, smaller_configuration
from app.jobs.spec import Adapter, TrainingSpec, check_compatibility

LLAMA_7B = ModelShape(parameters=6_738_415_616, hidden_size=4096, layers=32, vocab_size=32000, intermediate_size=11008)


@pytest.mark.parametrize(
    ("adapter", "low", "high"),
    [
        ("lora", 14, 18),  # published: LoRA in 16-bit ≈ 16 GB
        ("qlora", 5, 7.5),  # published: QLoRA 4-bit ≈ 6 GB
        ("full", 80, 120),  # published: full fine-tuning, AdamW, mixed precision ≈ 80–120 GB
    ],
)
def test_estimate_matches_published_7b_figures(adapter: str, low: float, high: float) -> None:
    spec = TrainingSpec(adapter=Adapter(adapter), batch_size=1, max_seq_length=512)
    total = estimate_memory(spec, LLAMA_7B).total / 1e9  # the published figures are in GB
    assert low <= total <= high, f"{adapter}: {total:.1f} GB"


def test_the_gpu_estimate_counts_activations_as_checkpointed_training_keeps_them() -> None:
    """On a GPU, training recomputes each layer's activations in the backward pass (all but prefix tuning):
    it keeps each layer's input and one layer's full set, not every layer's full set."""
    lora = TrainingSpec(adapter=Adapter.lora, batch_size=4, max_seq_length=2048)
    prefix = lora.model_copy(update={"adapter": Adapter.prefix_tuning})
    logits = 4 * 2048 * LLAMA_7B.vocab_size * 4
    kept = estimate_memory(lora, LLAMA_7B).activations - logits
    full = estimate_memory(prefix, LLAMA_7B).activations - logits
    assert kept == 4 * 2048 * 4096 * (32 * 2 + 34)
    assert full == 4 * 2048 * 4096 * 32 * 34


def test_qlora_keeps_the_embeddings_in_sixteen_bit() -> None:
    spec = TrainingSpec(adapter=Adapter.qlora, batch_size=1, max_seq_length=512)
    embeddings = 2 * 32000 * 4096
    expected = (LLAMA_7B.parameters - embeddings) * 0.55 + embeddings * 2
    assert estimate_memory(spec, LLAMA_7B).weights == pytest.approx(expected)


SMOLLM2 = ModelShape(parameters=134_515_008, hidden_size=576, layers=30, vocab_size=49152, intermediate_size=1536)


@pytest.mark.parametrize(
    ("batch", "length", "measured_mb"),
    [(2, 128, 2114), (4, 128, 3052), (8, 128, 4845)],  # peak RSS in bench/results/memory_estimate.md
)
def test_the_cpu_estimate_follows_the_measured_peaks(batch: int, length: int, measured_mb: float) -> None:
    spec = TrainingSpec(batch_size=batch, max_seq_length=length)
    assert estimate_memory(spec, SMOLLM2, gpu=False).total / GIB * 1024 == pytest.approx(measured_mb, rel=0.15)


def test_the_cpu_estimate_counts_one_pass_of_the_batch() -> None:
    """A CPU runs a batch as passes of about a thousand tokens: 8 × 512 holds what 8 × 128 holds."""
    short, long = TrainingSpec(batch_size=8, max_seq_length=128), TrainingSpec(batch_size=8, max_seq_length=512)
    assert (
        estimate_memory(long, SMOLLM2, gpu=False).activations == estimate_memory(short, SMOLLM2, gpu=False).activations
    )
    dpo = TrainingSpec(method="dpo", batch_size=8, max_seq_length=512)  # its trainer runs the whole batch
    assert (
        estimate_memory(dpo, SMOLLM2, gpu=False).activations > 3 * estimate_memory(long, SMOLLM2, gpu=False).activations
    )
    assert estimate_memory(long, SMOLLM2).activations > estimate_memory(short, SMOLLM2).activations  # a GPU: whole


def test_a_configuration_that_fits_is_offered() -> None:
    spec = TrainingSpec(adapter=Adapter.full, batch_size=8, max_seq_length=2048)
    smaller = smaller_configuration(spec, LLAMA_7B, 24 * GIB)
    assert smaller is not None and estimate_memory(smaller, LLAMA_7B).total <= 24 * GIB
    assert smaller.adapter in (Adapter.lora, Adapter.qlora)
    assert smaller.effective_batch == spec.effective_batch  # batch traded for accumulation, not lost
    assert smaller_configuration(spec, LLAMA_7B, 1 * GIB) is None


def test_spec_rejects_bad_values_with_the_field() -> None:
    with pytest.raises(ValidationError) as info:
        TrainingSpec.model_validate({"learning_rate": -1})
    assert info.value.errors()[0]["loc"] == ("learning_rate",)
    with pytest.raises(ValidationError):
        TrainingSpec.model_validate({"unknown_field": 1})
    with pytest.raises(ValidationError):
        TrainingSpec.model_validate({"lora_target_modules": "q_proj; rm -rf /"})


def test_incompatible_choices_are_refused_with_the_fix() -> None:
    def problems(**kwargs: object) -> dict[str, str]:
        spec = TrainingSpec.model_validate(kwargs)
        found = check_compatibility(spec, kinds={"chat": 100}, context_length=2048, cuda=False, train_records=90)
        return {p.field: p.message for p in found}

    assert problems() == {}
    assert "preference" in problems(method="dpo")["method"]
    assert "CUDA" in problems(adapter="qlora")["adapter"]
    assert "2048" in problems(max_seq_length=4096)["max_seq_length"]
    assert "eval" in problems(early_stopping_patience=3, eval_steps=0)["early_stopping_patience"]
    assert "bf16" in problems(precision="bf16")["precision"]
