"""Child process: load an uploaded PEFT adapter onto its base model and run one forward pass.

The adapter's tensors must all land on modules of the base (no unexpected or missing adapter weights, no shape
mismatch), and the tuned model's logits must be finite. Only safetensors are read.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from worker.protocol import progress, run_child

ADAPTER_MARKERS = ("lora_", "ia3_")


def check(job: dict[str, Any]) -> dict[str, Any]:
    import torch
    from peft import PeftConfig, get_peft_model, set_peft_model_state_dict
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    adapter = Path(job["adapter_dir"])
    progress(0.1, "merge_loading")
    base = AutoModelForCausalLM.from_pretrained(
        job["model_dir"], dtype=torch.float32, use_safetensors=True, trust_remote_code=False
    )
    config = PeftConfig.from_pretrained(str(adapter))
    config.inference_mode = True
    model = get_peft_model(base, config)
    state = load_file(str(adapter / "adapter_model.safetensors"))
    result = set_peft_model_state_dict(model, state)
    unexpected = sorted(result.unexpected_keys)
    missing = sorted(k for k in result.missing_keys if any(m in k for m in ADAPTER_MARKERS))
    if unexpected:
        raise ValueError(
            f"{len(unexpected)} adapter weights match no layer of the base model (first: {unexpected[0]}); "
            "was the adapter trained on a different base?"
        )
    if missing:
        raise ValueError(f"{len(missing)} adapter weights are missing from the file (first: {missing[0]})")
    progress(0.7, "adapter_check_forward")
    tokenizer = AutoTokenizer.from_pretrained(str(adapter), trust_remote_code=False)
    batch = tokenizer("Hello, how are you?", return_tensors="pt")
    with torch.no_grad():
        logits = model(**batch).logits
    if not torch.isfinite(logits).all():
        raise ValueError("the adapter makes the model's outputs NaN or infinite")
    trainable = sum(t.numel() for t in state.values())
    size = sum(p.stat().st_size for p in adapter.rglob("*") if p.is_file())
    return {"adapter_parameters": trainable, "size_bytes": size, "peft_type": str(config.peft_type)}


def main(job: dict[str, Any]) -> int:
    return run_child(check, job, error_code="adapter_check_error")


if __name__ == "__main__":
    sys.exit(main(json.loads(sys.argv[1])))
