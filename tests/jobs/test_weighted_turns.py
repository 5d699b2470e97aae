"""OpenAI's ``weight: 0`` on an assistant turn: the turn is context, never a target. Proved on the path a job
takes (our rows, TRL's SFTTrainer building labels and collating): the turn's tokens have no label, and the loss
sends no gradient to the logits that predict them, while the weighted turn's logits get one."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.datasets.formats import canonicalize
from app.datasets.template import renderer_for
from tests.datasets.test_openai_files import WEIGHTED
from worker.training.data import sft_rows


@pytest.mark.timeout(300)
def test_a_weight_zero_turn_gets_no_label_and_no_gradient(tiny_model_dir: Path, tmp_path: Path) -> None:
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    renderer = renderer_for(tiny_model_dir, (tiny_model_dir / "chat_template.jinja").read_text())
    assert renderer is not None
    record = canonicalize(WEIGHTED, "openai_chat")[0]
    rows = sft_rows([{"kind": record.kind, **record.data}], renderer, max_length=512, assistant_only=True)
    text, _spans = renderer.trained_spans(record.data["messages"])
    ids = rows[0]["input_ids"]

    tokenizer = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    offsets = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    assert len(offsets) == len(ids)
    skipped_start = text.index("Paris<|im_end|>")
    trained_start = text.index("Paris, as if")
    skipped = [i for i, (a, _b) in enumerate(offsets) if skipped_start <= a < skipped_start + len("Paris")]
    trained = [i for i, (a, _b) in enumerate(offsets) if trained_start <= a < trained_start + 10]
    assert skipped and trained

    model = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir))
    config = SFTConfig(
        output_dir=str(tmp_path), max_steps=1, per_device_train_batch_size=1, report_to=[], max_length=512, bf16=False
    )
    trainer = SFTTrainer(model=model, args=config, train_dataset=Dataset.from_list(rows), processing_class=tokenizer)
    example = trainer.train_dataset[0]
    labels = example["labels"]
    assert all(labels[i] == -100 for i in skipped)  # the weight-0 answer is never a target
    assert all(labels[i] == ids[i] for i in trained)

    batch = trainer.data_collator([example])
    out = model(input_ids=batch["input_ids"], attention_mask=batch.get("attention_mask"))
    logits = out.logits
    logits.retain_grad()
    # the causal LM loss as the trainer computes it: position t predicts token t + 1
    loss = torch.nn.functional.cross_entropy(
        logits[0, :-1].float(), batch["labels"][0, 1:], ignore_index=-100, reduction="mean"
    )
    loss.backward()
    assert logits.grad is not None
    grad = logits.grad[0]
    assert all(float(grad[i - 1].abs().sum()) == 0.0 for i in skipped)
    assert all(float(grad[i - 1].abs().sum()) > 0.0 for i in trained)
