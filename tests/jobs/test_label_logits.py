"""The CPU trainer's loss over the learned positions only (worker/training/label_logits.py) is the model's own
loss, with the same gradients, for padded and packed batches; adapters that feed virtual tokens are left to
TRL's loss."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import torch
from peft import LoraConfig, PrefixTuningConfig, TaskType, get_peft_model
from transformers import AutoModelForCausalLM

from worker.training.label_logits import learned_positions_loss, supports


def lora_model(tiny_model_dir: Path) -> torch.nn.Module:
    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir), dtype=torch.float32)
    config = LoraConfig(r=4, target_modules="all-linear", init_lora_weights=False, task_type=TaskType.CAUSAL_LM)
    model = get_peft_model(base, config)
    model.train()
    return model


def gradients(model: torch.nn.Module) -> list[torch.Tensor]:
    grads = [p.grad.clone() for p in model.parameters() if p.requires_grad and p.grad is not None]
    model.zero_grad()
    return grads


@pytest.mark.parametrize("packed", [False, True])
def test_the_loss_over_learned_positions_is_the_models_loss(tiny_model_dir: Path, packed: bool) -> None:
    model = lora_model(tiny_model_dir)
    for module in model.modules():  # dropout off: the two passes must see the same network
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(5, 1000, (2, 12), generator=generator)
    labels = ids.clone()
    labels[:, :5] = -100  # the prompt
    if packed:  # two records in one row, positions restarting: the second record's first label is masked
        inputs = {
            "input_ids": ids.reshape(1, -1),
            "position_ids": torch.cat([torch.arange(12), torch.arange(12)]).unsqueeze(0),
            "labels": labels.reshape(1, -1),
        }
    else:
        inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}
    # without a cache: with one, transformers does not read packed rows' restarting positions as separate records
    expected = model(**inputs, use_cache=False).loss
    expected.backward()
    expected_grads = gradients(model)
    loss, correct, count = learned_positions_loss(model, inputs, None)
    loss.backward()
    assert count == int((inputs["labels"][:, 1:] != -100).sum())
    assert 0 <= int(correct) <= int(count)
    assert float(loss.detach()) == pytest.approx(float(expected.detach()), rel=1e-5)
    for ours, theirs in zip(gradients(model), expected_grads, strict=True):
        torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-6)
    # over gradient accumulation the sum is divided by the whole step's count, as the Trainer passes it
    scaled, _, _ = learned_positions_loss(model, inputs, torch.tensor(4 * int(count)))
    assert float(scaled.detach()) == pytest.approx(float(expected.detach()) / 4, rel=1e-5)


def test_adapters_with_virtual_tokens_keep_trls_loss(tiny_model_dir: Path) -> None:
    base = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir), dtype=torch.float32)
    assert supports(base)
    prefix = get_peft_model(base, PrefixTuningConfig(task_type=TaskType.CAUSAL_LM, num_virtual_tokens=4))
    assert not supports(prefix)
    assert supports(lora_model(tiny_model_dir))


def test_packed_passes_fit_records_into_budgeted_rows_without_padding() -> None:
    from worker.training.label_logits import PackedPasses

    examples = [{"input_ids": list(range(10 * (n + 1), 10 * (n + 1) + size))} for n, size in enumerate([6, 3, 5, 9])]
    batch = PackedPasses(budget=10)(examples)
    bounds = batch["pass_bounds"].tolist()
    assert bounds[0] == 0 and bounds[-1] == 23 == batch["input_ids"].shape[1]
    sizes = [b - a for a, b in itertools.pairwise(bounds)]
    assert sizes == [9, 6 + 3, 5]  # longest first, first fit: 9 | 6+3 | 5 (5 fits in neither)
    positions = batch["position_ids"][0].tolist()
    assert positions[:9] == list(range(9)) and positions[9:15] == list(range(6)) and positions[15:18] == [0, 1, 2]
    labels = batch["labels"][0]
    starts = [i for i, p in enumerate(positions) if p == 0]
    assert all(int(labels[i]) == -100 for i in starts)  # no record learns from the one packed before it
    assert sorted(batch["input_ids"][0].tolist()) == sorted(t for e in examples for t in e["input_ids"])
    assert int(batch["attention_mask"].sum()) == 23
    # a record longer than the budget is a pass of its own
    long = PackedPasses(budget=4)([{"input_ids": list(range(7))}, {"input_ids": [1, 2]}])
    assert long["pass_bounds"].tolist() == [0, 7, 9]


@pytest.mark.parametrize("attention", ["sdpa", "refinery_segments"])
def test_a_packed_step_has_the_gradients_of_the_padded_batch(tiny_model_dir: Path, attention: str) -> None:
    """The passes of one step, each backpropagated on its own, add up to the gradients of the whole batch's
    mean loss over its learned tokens, computed padded in one pass; with transformers' packed-row masks and
    with the record-by-record attention the CPU trainer switches on for its passes."""
    from worker.training.label_logits import PackedPasses

    model = lora_model(tiny_model_dir)
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    generator = torch.Generator().manual_seed(2)
    records = []
    for size in (9, 14, 5, 11):
        ids = torch.randint(5, 1000, (size,), generator=generator).tolist()
        records.append({"input_ids": ids, "labels": [-100] * 3 + ids[3:]})
    longest = max(len(r["input_ids"]) for r in records)
    gaps = [longest - len(r["input_ids"]) for r in records]
    padded = {
        "input_ids": torch.tensor([r["input_ids"] + [0] * gap for r, gap in zip(records, gaps, strict=True)]),
        "attention_mask": torch.tensor([[1] * (longest - gap) + [0] * gap for gap in gaps]),
        "labels": torch.tensor([r["labels"] + [-100] * gap for r, gap in zip(records, gaps, strict=True)]),
    }
    model(**padded, use_cache=False).loss.backward()
    expected = gradients(model)
    batch = PackedPasses(budget=20)(records)
    bounds = batch["pass_bounds"].tolist()
    assert len(bounds) > 2  # more than one pass
    count = int((batch["labels"][:, 1:] != -100).sum())
    assert count == int((padded["labels"][:, 1:] != -100).sum())
    model.config._attn_implementation = attention
    for start, end in itertools.pairwise(bounds):
        piece = {k: batch[k][:, start:end] for k in ("input_ids", "labels", "position_ids")}
        loss, _, _ = learned_positions_loss(model, piece, torch.tensor(count))
        loss.backward()
    model.config._attn_implementation = "sdpa"
    for ours, theirs in zip(gradients(model), expected, strict=True):
        torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-6)
