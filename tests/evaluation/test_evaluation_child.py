"""The evaluation child's speed-ups keep its numbers: losses scored several records a pass equal one at a time,
and a second evaluation of the same data takes the base model's losses and answers from the first one's cache
(computing only the tuned model's part) with the same report."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from app.datasets.records import record_schema
from worker.evaluation import evaluate


@pytest.fixture
def job(tmp_path: Path, tiny_model_dir: Path) -> dict[str, Any]:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    adapter = tmp_path / "adapter"
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(str(tiny_model_dir)), LoraConfig(r=4))
    model.save_pretrained(str(adapter))
    AutoTokenizer.from_pretrained(str(tiny_model_dir)).save_pretrained(str(adapter))
    rows = []
    for i in range(40):
        words = " ".join(["word"] * (i % 7 + 1))  # answers of several lengths: passes pad
        data = {"messages": [{"role": "user", "content": f"Say {i}"}, {"role": "assistant", "content": words}]}
        split = "test" if i % 4 == 0 else "train"
        rows.append({"id": str(i), "line": i, "kind": "chat", "split": split, "file": "", "data": json.dumps(data)})
    records = tmp_path / "v.parquet"
    pq.write_table(pa.Table.from_pylist(rows, schema=record_schema()), str(records))
    options = {"sample_size": 4, "max_new_tokens": 6, "loss_records": 8, "probe_size": 5, "few_shot": 2}
    return {
        "options": {**options, "max_length": 256},
        "model_dir": str(tiny_model_dir),
        "chat_template": (tiny_model_dir / "chat_template.jinja").read_text(),
        "adapter_dir": str(adapter),
        "records_path": str(records),
        "train_records_path": str(records),
        "probe_path": str(Path(evaluate.__file__).parents[2] / "app" / "evaluation" / "probe.jsonl"),
        "output_dir": str(tmp_path / "out"),
        "base_cache_dir": str(tmp_path / "cache"),
    }


def test_losses_scored_together_equal_one_at_a_time(job: dict[str, Any]) -> None:
    from worker.training.data import read_records

    models = evaluate.Models(job)
    records = evaluate.conversations(read_records(Path(job["records_path"]), split=None, kinds={"chat"}))
    encoded = [models.encode_answer(r["prompt"], r["reference"], 256) for r in records]
    with models.use("tuned") as model:
        together = models.answer_losses(model, encoded, tokens_per_pass=300)
        alone = [models.answer_losses(model, [one])[0] for one in encoded]
    assert [count for _n, count in together] == [count for _n, count in alone]
    assert [nll for nll, _c in together] == pytest.approx([nll for nll, _c in alone], rel=1e-4)


def test_the_next_evaluation_of_the_same_data_reuses_the_base_models_numbers(
    job: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    prompts: list[int] = []
    scored: list[int] = []
    generate, losses = evaluate.Models.generate, evaluate.Models.answer_losses

    def counting_generate(self: Any, model: Any, batch: list[Any], max_new: int) -> list[str]:
        prompts.append(len(batch))
        return generate(self, model, batch, max_new)

    def counting_losses(self: Any, model: Any, encoded: list[Any], *args: Any) -> list[tuple[float, int]]:
        scored.append(len(encoded))
        return losses(self, model, encoded, *args)

    monkeypatch.setattr(evaluate.Models, "generate", counting_generate)
    monkeypatch.setattr(evaluate.Models, "answer_losses", counting_losses)
    first = evaluate.run(job)
    assert sum(prompts) == 3 * 4 and sum(scored) == 2 * (8 + 5)  # base, few-shot, tuned; both models' losses
    samples = (Path(job["output_dir"]) / "samples.jsonl").read_text()
    prompts.clear()
    scored.clear()
    again = evaluate.run(job)
    assert sum(prompts) == 4 and sum(scored) == 8 + 5  # the tuned model's part only
    assert again == first and (Path(job["output_dir"]) / "samples.jsonl").read_text() == samples
    # another template is another base for these numbers: nothing is reused
    prompts.clear()
    evaluate.run({**job, "chat_template": job["chat_template"] + " "})
    assert sum(prompts) == 3 * 4
