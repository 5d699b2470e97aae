"""Model loading and adapters (PEFT): LoRA (DoRA, rsLoRA), QLoRA, IA3, prompt, prefix and P-tuning, full,
freeze. A reward model is the base with a one-output score head (sequence classification)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from app.jobs.spec import Adapter, Method, TrainingSpec
from worker.training.distributed import local_rank


def training_dtype(spec: TrainingSpec, cuda: bool) -> Any:
    import torch

    if spec.precision == "fp32" or not cuda:
        return torch.float32
    if spec.precision == "fp16":
        return torch.float16
    if spec.precision == "bf16" or torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float16


def load_model(model_dir: Path, spec: TrainingSpec, cuda: bool, *, pad_token_id: int | None = None) -> Any:
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    kwargs: dict[str, Any] = {"dtype": training_dtype(spec, cuda), "use_safetensors": True, "trust_remote_code": False}
    model_class: Any = AutoModelForCausalLM
    if spec.method == Method.reward:
        model_class = AutoModelForSequenceClassification
        kwargs.update(num_labels=1, pad_token_id=pad_token_id)
    if spec.adapter == Adapter.qlora:
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=spec.qlora_double_quant,
            bnb_4bit_compute_dtype=getattr(torch, spec.qlora_compute_dtype),
        )
        kwargs["device_map"] = {"": local_rank()}
    model = model_class.from_pretrained(str(model_dir), **kwargs)
    if cuda and spec.adapter != Adapter.qlora and spec.num_gpus == 1:
        model = model.to("cuda")  # several GPUs: accelerate places each rank's copy or shard
    return model


def _targets(spec: TrainingSpec) -> Any:
    raw = spec.lora_target_modules.strip()
    return raw if raw == "all-linear" else [name.strip() for name in raw.split(",") if name.strip()]


def apply_adapter(model: Any, spec: TrainingSpec) -> Any:
    """Returns the model to train (a PeftModel for parameter-efficient adapters)."""
    from peft import (
        IA3Config,
        LoraConfig,
        PrefixTuningConfig,
        PromptEncoderConfig,
        PromptTuningConfig,
        TaskType,
        get_peft_model,
    )

    task = TaskType.SEQ_CLS if spec.method == Method.reward else TaskType.CAUSAL_LM
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
            task_type=task,  # a reward model's score head is saved with the adapter (modules_to_save)
        )
        return get_peft_model(model, config)
    if spec.adapter == Adapter.ia3:
        return get_peft_model(model, IA3Config(task_type=TaskType.CAUSAL_LM))
    if spec.adapter == Adapter.prompt_tuning:
        return get_peft_model(
            model, PromptTuningConfig(task_type=TaskType.CAUSAL_LM, num_virtual_tokens=spec.num_virtual_tokens)
        )
    if spec.adapter == Adapter.prefix_tuning:
        return get_peft_model(
            model, PrefixTuningConfig(task_type=TaskType.CAUSAL_LM, num_virtual_tokens=spec.num_virtual_tokens)
        )
    if spec.adapter == Adapter.p_tuning:
        return get_peft_model(
            model,
            PromptEncoderConfig(
                task_type=TaskType.CAUSAL_LM,
                num_virtual_tokens=spec.num_virtual_tokens,
                encoder_hidden_size=spec.encoder_hidden_size,
            ),
        )
    if spec.adapter == Adapter.freeze:
        layers = model.model.layers
        keep = max(1, min(spec.freeze_trainable_layers, len(layers)))
        for parameter in model.parameters():
            parameter.requires_grad = False
        for layer in layers[-keep:]:
            for parameter in layer.parameters():
                parameter.requires_grad = True
        if spec.method == Method.reward:  # the new score head is always trained
            for parameter in model.score.parameters():
                parameter.requires_grad = True
        return model
    return model  # full fine-tuning


def start_from_adapter(model: Any, adapter_dir: Path, spec: TrainingSpec) -> Any:
    """The model to train when a job starts from another job's LoRA: that adapter, loaded trainable (its rank,
    alpha and target modules are its own), trained further — reinforcement after supervised fine-tuning."""
    from peft import PeftModel

    if spec.adapter == Adapter.qlora:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model)
    return PeftModel.from_pretrained(model, str(adapter_dir), is_trainable=True)


def count_parameters(model: Any) -> tuple[int, int]:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total


def load_reward_model(reward: dict[str, Any], cuda: bool) -> tuple[Any, Any]:
    """A reward model trained here (a Refinery reward-model job), ready to score: its adapter merged."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    final = Path(reward["final_dir"])
    tokenizer = AutoTokenizer.from_pretrained(str(final), trust_remote_code=False)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    kwargs: dict[str, Any] = {
        "num_labels": 1,
        "pad_token_id": tokenizer.pad_token_id,
        "use_safetensors": True,
        "trust_remote_code": False,
    }
    if (final / "adapter_config.json").is_file():
        from peft import PeftModel

        base = AutoModelForSequenceClassification.from_pretrained(reward["model_dir"], **kwargs)
        model = PeftModel.from_pretrained(base, str(final)).merge_and_unload()
    else:
        model = AutoModelForSequenceClassification.from_pretrained(str(final), **kwargs)
    model.eval()
    if cuda:
        model = model.to(f"cuda:{local_rank()}")
    return model, tokenizer
