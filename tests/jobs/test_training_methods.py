"""Every method and adapter trains the tiny random Llama for real: trainable weights change and the
saved adapter (or model) reloads to the same logits as the trained model (the probe the child records)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from safetensors.torch import load_file

from app.datasets.records import record_schema
from app.jobs import estimate
from app.jobs.checkpoints import latest_complete_checkpoint
from worker.training import train

SCHEMA = record_schema()


def _write(path: Path, records: list[tuple[str, dict[str, Any]]]) -> Path:
    rows = [
        {
            "id": str(i),
            "line": i,
            "kind": kind,
            "split": "validation" if i % 8 == 0 else "train",
            "file": "",
            "data": json.dumps(data),
        }
        for i, (kind, data) in enumerate(records, start=1)
    ]
    pq.write_table(pa.Table.from_pylist(rows, schema=SCHEMA), str(path))
    return path


def _chat(i: int) -> tuple[str, dict[str, Any]]:
    return "chat", {
        "messages": [
            {"role": "user", "content": f"What is {i} plus {i}?"},
            {"role": "assistant", "content": f"{i} plus {i} is {2 * i}."},
        ]
    }


def _pref(i: int) -> tuple[str, dict[str, Any]]:
    return "preference", {
        "prompt": [{"role": "user", "content": f"Say {i}"}],
        "chosen": [{"role": "assistant", "content": f"{i}"}],
        "rejected": [{"role": "assistant", "content": "no"}],
    }


def _kto(i: int) -> tuple[str, dict[str, Any]]:
    good = i % 2 == 0
    return "kto", {
        "messages": [
            {"role": "user", "content": f"What is {i} plus {i}?"},
            {"role": "assistant", "content": f"{2 * i}." if good else "I do not know."},
        ],
        "label": good,
    }


def _run(
    tmp_path: Path,
    tiny_model_dir: Path,
    records: Path,
    spec: dict[str, Any],
    general: Path | None = None,
    reward: dict[str, str] | None = None,
    start_adapter: Path | None = None,
) -> dict[str, Any]:
    job = {
        "spec": {
            "max_steps": 4,
            "batch_size": 4,
            "save_steps": 2,
            "eval_steps": 2,
            "max_seq_length": 128,
            "learning_rate": 5e-3,
            **spec,
        },
        "model_dir": str(tiny_model_dir),
        "chat_template": (tiny_model_dir / "chat_template.jinja").read_text(),
        "records_path": str(records),
        "general_records_path": str(general) if general else None,
        "output_dir": str(tmp_path / "checkpoints"),
        "final_dir": str(tmp_path / "final"),
        "metrics_path": str(tmp_path / "metrics.jsonl"),
        "reward": reward,
        "start_adapter_dir": str(start_adapter) if start_adapter else None,
    }
    return train.run(job)


@pytest.fixture(scope="module")
def base_probe(tiny_model_dir: Path) -> list[float]:
    """The untrained model's probe logits: a trained model's must differ."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return list(
        train.probe_logits(
            AutoModelForCausalLM.from_pretrained(str(tiny_model_dir)),
            AutoTokenizer.from_pretrained(str(tiny_model_dir)),
        )
    )


def _learned(out: Path, result: dict[str, Any], base_probe: list[float]) -> None:
    """The weights changed (the model answers the probe differently than the base) and the loss is finite and
    moved: every method test asks this, so a trainer that silently trains nothing fails."""
    import math

    assert result["probe_logits"] != pytest.approx(base_probe, abs=1e-6)
    losses = [m["loss"] for m in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()) if "loss" in m]
    assert losses and all(math.isfinite(loss) for loss in losses), losses
    assert len(set(losses)) > 1, losses


def _reload_probe(tiny_model_dir: Path, final: Path, peft: bool) -> list[float]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if peft:
        from peft import PeftModel

        model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(str(tiny_model_dir)), str(final))
    else:
        model = AutoModelForCausalLM.from_pretrained(str(final))
    return train.probe_logits(model, AutoTokenizer.from_pretrained(str(final)))


@pytest.mark.parametrize(
    ("adapter", "extra", "peft"),
    [
        ("lora", {}, True),
        ("lora", {"use_dora": True, "use_rslora": True, "lora_target_modules": "q_proj,v_proj"}, True),
        ("ia3", {}, True),
        ("prompt_tuning", {"num_virtual_tokens": 4}, True),
        ("prefix_tuning", {"num_virtual_tokens": 4}, True),
        ("p_tuning", {"num_virtual_tokens": 4, "encoder_hidden_size": 32}, True),
        ("full", {"learning_rate": 1e-3}, False),
        ("freeze", {"freeze_trainable_layers": 1, "learning_rate": 1e-3}, False),
    ],
)
def test_sft_with_each_adapter(
    tmp_path: Path, tiny_model_dir: Path, adapter: str, extra: dict[str, Any], peft: bool, base_probe: list[float]
) -> None:
    records = _write(tmp_path / "v.parquet", [_chat(i) for i in range(24)])
    result = _run(tmp_path, tiny_model_dir, records, {"adapter": adapter, **extra})
    _learned(tmp_path, result, base_probe)
    final = tmp_path / "final"
    assert result["steps"] == 4 and result["trainable_parameters"] > 0
    assert not list(final.glob("*.bin"))  # only safetensors leave the trainer
    if adapter == "lora":
        weights = load_file(str(final / "adapter_model.safetensors"))
        lora_b = [t for name, t in weights.items() if "lora_B" in name]
        assert lora_b and any(torch.count_nonzero(t) > 0 for t in lora_b)  # B starts at zero: it was trained
    if adapter == "freeze":
        from transformers import AutoModelForCausalLM

        base = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir)).state_dict()
        tuned = AutoModelForCausalLM.from_pretrained(str(final)).state_dict()
        assert torch.equal(base["model.layers.0.mlp.up_proj.weight"], tuned["model.layers.0.mlp.up_proj.weight"])
        assert not torch.equal(base["model.layers.1.mlp.up_proj.weight"], tuned["model.layers.1.mlp.up_proj.weight"])
    reloaded = _reload_probe(tiny_model_dir, final, peft)
    assert reloaded == pytest.approx(result["probe_logits"], abs=1e-3)
    metrics = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics if "loss" in m] == [1, 2, 3, 4]
    assert any("eval_loss" in m for m in metrics)
    assert latest_complete_checkpoint(tmp_path / "checkpoints") is not None


def test_neftune_noise_changes_what_supervised_training_learns(tmp_path: Path, tiny_model_dir: Path) -> None:
    """The same seeded run with and without NEFTune: the noisy embeddings reach the trainer (the results
    differ), and a method that cannot use it is refused naming the field."""
    from app.jobs.spec import TrainingSpec, check_compatibility

    records = _write(tmp_path / "v.parquet", [_chat(i) for i in range(24)])
    for name in ("plain", "again", "noisy"):
        (tmp_path / name).mkdir()
    plain = _run(tmp_path / "plain", tiny_model_dir, records, {"adapter": "lora"})
    again = _run(tmp_path / "again", tiny_model_dir, records, {"adapter": "lora"})
    noisy = _run(tmp_path / "noisy", tiny_model_dir, records, {"adapter": "lora", "neftune_noise_alpha": 5})
    assert plain["probe_logits"] == pytest.approx(again["probe_logits"], abs=1e-6)  # seeded: the same run
    assert noisy["probe_logits"] != pytest.approx(plain["probe_logits"], abs=1e-6)
    dpo = TrainingSpec.model_validate({"method": "dpo", "neftune_noise_alpha": 5})
    problems = check_compatibility(dpo, kinds={"preference": 10}, context_length=2048, cuda=False, train_records=10)
    assert [p.field for p in problems] == ["neftune_noise_alpha"]


def test_continued_pretraining_mixes_general_text(
    tmp_path: Path, tiny_model_dir: Path, base_probe: list[float]
) -> None:
    domain = _write(tmp_path / "d.parquet", [("text", {"text": f"Domain fact number {i}. " * 20}) for i in range(8)])
    general = _write(tmp_path / "g.parquet", [_chat(i) for i in range(40)])
    result = _run(tmp_path, tiny_model_dir, domain, {"method": "cpt", "cpt_general_ratio": 2}, general=general)
    _learned(tmp_path, result, base_probe)
    train_domain = sum(1 for i in range(1, 9) if i % 8 != 0)
    assert result["train_records"] == train_domain * 3  # 1 domain : 2 general
    assert _reload_probe(tiny_model_dir, tmp_path / "final", True) == pytest.approx(result["probe_logits"], abs=1e-3)


def test_dpo_on_preference_pairs(tmp_path: Path, tiny_model_dir: Path, base_probe: list[float]) -> None:
    records = _write(tmp_path / "p.parquet", [_pref(i) for i in range(24)])
    result = _run(tmp_path, tiny_model_dir, records, {"method": "dpo", "learning_rate": 1e-3})
    _learned(tmp_path, result, base_probe)
    assert result["steps"] == 4
    metrics = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert any("rewards_accuracies" in m or "loss" in m for m in metrics)
    assert _reload_probe(tiny_model_dir, tmp_path / "final", True) == pytest.approx(result["probe_logits"], abs=1e-3)


def test_resume_continues_from_the_last_complete_checkpoint(tmp_path: Path, tiny_model_dir: Path) -> None:
    records = _write(tmp_path / "v.parquet", [_chat(i) for i in range(24)])
    _run(tmp_path, tiny_model_dir, records, {"max_steps": 4})
    # a checkpoint without the completion marker (killed mid-save) must be ignored and removed
    broken = tmp_path / "checkpoints" / "checkpoint-6"
    broken.mkdir()
    (broken / "adapter_model.safetensors").write_bytes(b"partial")
    result = _run(tmp_path, tiny_model_dir, records, {"max_steps": 6})
    assert result["resumed_from"] == "checkpoint-4" and result["steps"] == 6
    assert not broken.exists() or (broken / "refinery-complete.json").exists()


@pytest.mark.parametrize("method", ["orpo", "kto"])
def test_orpo_and_kto(tmp_path: Path, tiny_model_dir: Path, method: str, base_probe: list[float]) -> None:
    make = _pref if method == "orpo" else _kto
    records = _write(tmp_path / "p.parquet", [make(i) for i in range(24)])
    result = _run(tmp_path, tiny_model_dir, records, {"method": method, "learning_rate": 1e-3})
    _learned(tmp_path, result, base_probe)
    assert result["steps"] == 4 and result["eval_loss"] is not None
    weights = load_file(str(tmp_path / "final" / "adapter_model.safetensors"))
    assert any(torch.count_nonzero(t) > 0 for name, t in weights.items() if "lora_B" in name)
    assert _reload_probe(tiny_model_dir, tmp_path / "final", True) == pytest.approx(result["probe_logits"], abs=1e-3)


@pytest.fixture(scope="module")
def reward_model(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> dict[str, Any]:
    """A reward model trained on preference pairs (LoRA plus its score head), as GRPO/RLOO use it."""
    tmp_path = tmp_path_factory.mktemp("reward")
    records = _write(tmp_path / "p.parquet", [_pref(i) for i in range(24)])
    result = _run(tmp_path, tiny_model_dir, records, {"method": "reward", "learning_rate": 1e-3})
    return {"result": result, "info": {"model_dir": str(tiny_model_dir), "final_dir": str(tmp_path / "final")}}


def test_reward_model_trains_its_score_head_and_reloads(reward_model: dict[str, Any], tiny_model_dir: Path) -> None:
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    final = Path(reward_model["info"]["final_dir"])
    weights = load_file(str(final / "adapter_model.safetensors"))
    assert any("score" in name for name in weights)  # the new head travels with the adapter
    tokenizer = AutoTokenizer.from_pretrained(str(final))
    base = AutoModelForSequenceClassification.from_pretrained(
        str(tiny_model_dir), num_labels=1, pad_token_id=tokenizer.pad_token_id
    )
    model = PeftModel.from_pretrained(base, str(final))
    assert train.probe_logits(model, tokenizer) == pytest.approx(reward_model["result"]["probe_logits"], abs=1e-3)


@pytest.mark.parametrize("method", ["grpo", "rloo"])
def test_rlhf_with_the_reward_model_trained_here(
    tmp_path: Path, tiny_model_dir: Path, reward_model: dict[str, Any], method: str, base_probe: list[float]
) -> None:
    records = _write(tmp_path / "c.parquet", [_chat(i) for i in range(24)])
    spec = {"method": method, "num_generations": 2, "max_completion_length": 8, "learning_rate": 1e-3}
    result = _run(tmp_path, tiny_model_dir, records, spec, reward=reward_model["info"])
    assert result["probe_logits"] != pytest.approx(base_probe, abs=1e-6)  # the policy's weights moved
    assert result["steps"] == 4
    metrics = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics if "loss" in m] == [1, 2, 3, 4]
    assert _reload_probe(tiny_model_dir, tmp_path / "final", True) == pytest.approx(result["probe_logits"], abs=1e-3)


def test_reinforcement_from_a_python_grader_reading_the_records_fields(tmp_path: Path, tiny_model_dir: Path) -> None:
    """OpenAI's reinforcement fine-tuning: GRPO rewarded by a grader; the record's own fields reach it as item
    (a grader that could not read item.target would score 0), and the reward's mean and spread are logged."""
    rows = [
        ("prompt", {"messages": [{"role": "user", "content": f"Say yes {i}"}], "extra": {"target": "yes"}})
        for i in range(24)
    ]
    records = _write(tmp_path / "r.parquet", rows)
    grader = {
        "type": "python",
        "name": "says yes",
        "source": "def grade(sample, item):\n"
        "    return 0.5 + 0.5 * min(1.0, len(sample['output_text']) / 40) if item['target'] == 'yes' else 0.0\n",
    }
    spec = {"method": "grpo", "grader": grader, "num_generations": 2, "max_completion_length": 8, "max_steps": 3}
    result = _run(tmp_path, tiny_model_dir, records, {**spec, "learning_rate": 1e-3})
    assert result["steps"] == 3
    metrics = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    logged = [m for m in metrics if "loss" in m]
    assert [m["step"] for m in logged] == [1, 2, 3]
    assert all(0.5 <= m["reward"] <= 1.0 and m["reward_std"] >= 0 and m["grader_failed"] == 0 for m in logged)
    assert _reload_probe(tiny_model_dir, tmp_path / "final", True) == pytest.approx(result["probe_logits"], abs=1e-3)


def test_a_job_can_start_from_another_jobs_lora(tmp_path: Path, tiny_model_dir: Path, base_probe: list[float]) -> None:
    """Training further: the new job loads the earlier adapter trainable (its own rank, not the new spec's) and
    starts from its weights, not from a fresh adapter."""
    records = _write(tmp_path / "v.parquet", [_chat(i) for i in range(24)])
    first = tmp_path / "first"
    first.mkdir()
    started = _run(first, tiny_model_dir, records, {"lora_r": 4, "lora_alpha": 8, "max_steps": 2, "eval_steps": 0})
    assert started["probe_logits"] != pytest.approx(base_probe, abs=1e-6)
    second = tmp_path / "second"
    second.mkdir()
    job = {"max_steps": 1, "eval_steps": 0, "learning_rate": 1e-12, "lora_r": 16}  # a step too small to move
    further = _run(second, tiny_model_dir, records, job, start_adapter=first / "final")
    assert further["probe_logits"] == pytest.approx(started["probe_logits"], abs=1e-4)
    assert json.loads((second / "final" / "adapter_config.json").read_text())["r"] == 4
    assert further["trainable_parameters"] == started["trainable_parameters"]


def test_a_reward_grader_is_checked_with_the_spec() -> None:
    from pydantic import ValidationError

    from app.jobs.spec import TrainingSpec

    judge = {"type": "score_model", "name": "j", "model": "m", "input": [{"role": "user", "content": "x"}]}
    with pytest.raises(ValidationError, match="reaches no judge"):
        TrainingSpec.model_validate({"method": "grpo", "grader": judge})
    bad = {"type": "string_check", "name": "s", "input": "{{ answer }}", "reference": "x", "operation": "eq"}
    with pytest.raises(ValidationError, match=r"grader\.input"):
        TrainingSpec.model_validate({"method": "grpo", "grader": bad})


def test_cpu_micro_batches_keep_the_effective_batch() -> None:
    from app.jobs.spec import TrainingSpec

    def split(batch: int, accum: int, longest: int) -> tuple[int, int]:
        spec = TrainingSpec.model_validate({"batch_size": batch, "gradient_accumulation_steps": accum})
        return train.cpu_micro_batches(spec, {"input_ids": [[0] * longest, [0]]})

    assert split(8, 1, 424) == (2, 4)
    assert split(8, 2, 100) == (8, 2)  # short records: the batch fits in one pass
    assert split(8, 1, 4000) == (1, 8)
    assert split(6, 1, 300) == (3, 2)  # the largest divisor of the batch that fits


def test_a_batch_split_into_passes_trains_the_same_steps(
    tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Passes of one record add up to the step of the whole batch: the same losses and the same weights."""
    rows = [_chat(i) for i in range(16)]
    rows = [
        ("chat", {"messages": [*d["messages"][:1], {"role": "assistant", "content": "ok " * (i % 5 * 9 + 1)}]})
        for i, (_k, d) in enumerate(rows)
    ]
    records = _write(tmp_path / "v.parquet", rows)
    found = []
    for budget in (100_000, 1):  # one pass of four records, then four passes of one
        monkeypatch.setattr(estimate, "CPU_PASS_TOKENS", budget)
        out = tmp_path / str(budget)
        out.mkdir()
        result = _run(out, tiny_model_dir, records, {"group_by_length": False, "eval_steps": 0, "lora_dropout": 0})
        metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
        found.append(([row["loss"] for row in metrics if "loss" in row], result["probe_logits"]))
    assert found[0][0] == pytest.approx(found[1][0], rel=1e-4)
    assert found[0][1] == pytest.approx(found[1][1], abs=1e-4)


def test_one_table_maps_every_method_to_its_data_and_trainer() -> None:
    from app.jobs.spec import METHOD_KINDS, RL_METHODS, Method
    from worker.training.methods import PLANS

    assert set(PLANS) == set(Method) and set(METHOD_KINDS) == {m.value for m in Method}
    assert {m for m, plan in PLANS.items() if plan.needs_reward} == RL_METHODS
    assert {m for m, plan in PLANS.items() if not plan.evaluates} == RL_METHODS
