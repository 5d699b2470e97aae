"""Multi-GPU training: the worker starts the child through ``accelerate launch`` with a config generated
from the spec (DDP, FSDP, or DeepSpeed ZeRO-2/3). Multi-node runs use ``torchrun`` (docs/multi-gpu.md)."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import yaml

from app.jobs.spec import Adapter, TrainingSpec


def mixed_precision(spec: TrainingSpec, cuda: bool) -> str:
    if not cuda or spec.precision == "fp32":
        return "no"
    return "fp16" if spec.precision == "fp16" else "bf16"


def accelerate_config(spec: TrainingSpec, *, cuda: bool = True) -> dict[str, Any]:
    """The ``accelerate launch`` config for one machine with ``spec.num_gpus`` processes. Without CUDA
    (tests, CPU servers) the DDP launch is the same: accelerate starts the processes through torchrun and
    each one, finding no GPU, trains on the CPU and syncs over gloo."""
    config: dict[str, Any] = {
        "compute_environment": "LOCAL_MACHINE",
        "num_machines": 1,
        "machine_rank": 0,
        "num_processes": spec.num_gpus,
        "mixed_precision": mixed_precision(spec, cuda),
        "rdzv_backend": "static",
        "same_network": True,
        "main_training_function": "main",
        "use_cpu": False,
    }
    if cuda and spec.distributed == "fsdp":
        config["distributed_type"] = "FSDP"
        config["fsdp_config"] = {
            "fsdp_version": 2,
            "fsdp_auto_wrap_policy": "TRANSFORMER_BASED_WRAP",
            "fsdp_reshard_after_forward": True,
            "fsdp_state_dict_type": "FULL_STATE_DICT",  # the saved adapter or model is one ordinary file
            "fsdp_cpu_ram_efficient_loading": spec.adapter == Adapter.full,
            "fsdp_offload_params": False,
            "fsdp_activation_checkpointing": False,
        }
    elif cuda and spec.distributed.startswith("deepspeed"):
        stage = 3 if spec.distributed == "deepspeed_zero3" else 2
        config["distributed_type"] = "DEEPSPEED"
        config["deepspeed_config"] = {
            "zero_stage": stage,
            "gradient_accumulation_steps": spec.gradient_accumulation_steps,
            "gradient_clipping": spec.max_grad_norm,
            "offload_optimizer_device": "none",
            "offload_param_device": "none",
            "zero3_init_flag": stage == 3,
            "zero3_save_16bit_model": stage == 3,
        }
    else:
        config["distributed_type"] = "MULTI_GPU"
        config["gpu_ids"] = "all"
    return config


def launch_argv(spec: TrainingSpec, job_json: str, config_path: Path, *, cuda: bool = True) -> list[str]:
    """One process for a single GPU (or CPU); ``accelerate launch`` with a generated config above that."""
    child = ["-m", "worker.training.train", job_json]
    if spec.num_gpus <= 1:
        return [sys.executable, *child]
    config_path.write_text(yaml.safe_dump(accelerate_config(spec, cuda=cuda), sort_keys=True))
    return [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        str(config_path),
        "--num_processes",
        str(spec.num_gpus),
        *child,
    ]


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0") or 0)


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1") or 1)
