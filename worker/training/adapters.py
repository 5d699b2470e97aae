"""Model loading and adapters (PEFT): LoRA (DoRA, rsLoRA), QLoRA, IA3, prompt tuning, full, freeze."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from app.jobs.spec import Adapter, TrainingSpec


def training_dtype(spec: TrainingSpec, cuda: bool) -> Any:
    import torch

    if spec.precision == "fp32" or not cuda:
        return torch.float32
    if spec.precision == "fp16":
        return torch.float16
    if spec.precision == "bf16" or torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float16


def load_model(model_dir: Path, spec: TrainingSpec, cuda: bool) -> Any:
    import torch
    from transformers import AutoModelForCausalLM

    kwargs: dict[str, Any] = {"dtype": training_dtype(spec, cuda), "use_safetensors": True, "trust_remote_code": False}
    if spec.adapter == Adapter.qlora:
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=spec.qlora_double_quant,
            bnb_4bit_compute_dtype=getattr(torch, spec.qlora_compute_dtype),
        )
        kwargs["device_map"] = {"": 0}
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), **kwargs)
    if cuda and spec.adapter != Adapter.qlora:
        model = model.to("cuda")
    return model


def _targets(spec: TrainingSpec) -> Any:
    raw = spec.lora_target_modules.strip()
    return raw if raw == "all-linear" else [name.strip() for name in raw.split(",") if name.strip()]


def apply_adapter(model: Any, spec: TrainingSpec) -> Any:
    """Returns the model to train (a PeftModel for parameter-efficient adapters)."""
    from peft import IA3Config, LoraConfig, PromptTuningConfig, TaskType, get_peft_model

    if spec.adapter in (Adapter.lora, Adapter.qlora):
        if spec.adapter == Adapter.qlora:
            from peft import prepare_model_for_kbit_training

            model = prepare_model_for_kbit_training(model)
        config: Any = LoraConfig(
            r=spec.lora_r,
            lora_alpha=spec.lora_alpha,
            lora_dropout=spec.lora_dropout,
            target_modules=_targets(spec),
            use_dora=spec.use_dora,
            use_rslora=spec.use_rslora,
            task_type=TaskType.CAUSAL_LM,
        )
        return get_peft_model(model, config)
    if spec.adapter == Adapter.ia3:
        return get_peft_model(model, IA3Config(task_type=TaskType.CAUSAL_LM))
    if spec.adapter == Adapter.prompt_tuning:
        return get_peft_model(
            model, PromptTuningConfig(task_type=TaskType.CAUSAL_LM, num_virtual_tokens=spec.num_virtual_tokens)
        )
    if spec.adapter == Adapter.freeze:
        layers = model.model.layers
        keep = max(1, min(spec.freeze_trainable_layers, len(layers)))
        for parameter in model.parameters():
            parameter.requires_grad = False
        for layer in layers[-keep:]:
            for parameter in layer.parameters():
                parameter.requires_grad = True
        return model
    return model  # full fine-tuning


def count_parameters(model: Any) -> tuple[int, int]:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total
