"""Multi-GPU specs start the child through ``accelerate launch`` with a config generated from the spec. The
launch itself is proved here with two CPU processes over gloo: the same code path as two GPUs, minus CUDA."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import yaml

from app.jobs.spec import TrainingSpec
from tests.jobs.test_training_methods import _chat, _write
from worker.training.distributed import accelerate_config, launch_argv


def test_generated_accelerate_configs() -> None:
    ddp = accelerate_config(TrainingSpec(num_gpus=4, precision="bf16"))
    assert ddp["distributed_type"] == "MULTI_GPU" and ddp["num_processes"] == 4 and ddp["mixed_precision"] == "bf16"
    fsdp = accelerate_config(TrainingSpec(num_gpus=8, distributed="fsdp", adapter="full"))
    assert fsdp["distributed_type"] == "FSDP"
    assert fsdp["fsdp_config"]["fsdp_state_dict_type"] == "FULL_STATE_DICT"
    assert fsdp["fsdp_config"]["fsdp_cpu_ram_efficient_loading"] is True
    zero3 = accelerate_config(TrainingSpec(num_gpus=2, distributed="deepspeed_zero3", gradient_accumulation_steps=4))
    assert zero3["distributed_type"] == "DEEPSPEED"
    assert zero3["deepspeed_config"]["zero_stage"] == 3
    assert zero3["deepspeed_config"]["gradient_accumulation_steps"] == 4
    on_cpu = accelerate_config(TrainingSpec(num_gpus=2, distributed="fsdp"), cuda=False)
    assert on_cpu["distributed_type"] == "MULTI_GPU" and on_cpu["mixed_precision"] == "no"  # DDP over gloo


def test_one_gpu_runs_the_child_directly(tmp_path: Path) -> None:
    argv = launch_argv(TrainingSpec(), "{}", tmp_path / "accelerate.yaml")
    assert argv[1:4] == ["-m", "worker.training.train", "{}"] and not (tmp_path / "accelerate.yaml").exists()


def test_two_process_launch_trains_and_only_rank_zero_reports(tmp_path: Path, tiny_model_dir: Path) -> None:
    records = _write(tmp_path / "v.parquet", [_chat(i) for i in range(32)])
    spec = TrainingSpec.model_validate(
        {"num_gpus": 2, "max_steps": 3, "batch_size": 2, "save_steps": 2, "eval_steps": 0, "max_seq_length": 64}
    )
    job = {
        "spec": spec.model_dump(mode="json"),
        "model_dir": str(tiny_model_dir),
        "chat_template": (tiny_model_dir / "chat_template.jinja").read_text(),
        "records_path": str(records),
        "general_records_path": None,
        "output_dir": str(tmp_path / "checkpoints"),
        "final_dir": str(tmp_path / "final"),
        "metrics_path": str(tmp_path / "metrics.jsonl"),
    }
    config = tmp_path / "accelerate.yaml"
    argv = launch_argv(spec, json.dumps(job), config, cuda=False)
    assert argv[1:3] == ["-m", "accelerate.commands.launch"]
    assert yaml.safe_load(config.read_text())["num_processes"] == 2
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    messages = []
    for line in done.stdout.splitlines():  # the Trainer prints its own log lines too; the supervisor skips them
        try:
            messages.append(json.loads(line))
        except ValueError:
            continue
    results = [m["result"] for m in messages if "result" in m]
    assert len(results) == 1  # the other rank trained silently
    assert results[0]["steps"] == 3 and results[0]["probe_logits"] is None
    assert (tmp_path / "final" / "adapter_model.safetensors").is_file()
    assert (tmp_path / "checkpoints" / "checkpoint-2" / "refinery-complete.json").is_file()
