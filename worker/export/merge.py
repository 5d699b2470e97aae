"""Child process: merge a PEFT adapter (LoRA, DoRA, QLoRA's LoRA, IA3) into its base model's weights and save
the result as safetensors with the tokenizer, so that it loads without PEFT.

The base is loaded in full precision (float32 on CPU, bfloat16 on a GPU that has it; never 4-bit, so a QLoRA
adapter merges into unquantised weights). Written into ``<output>.partial`` and renamed when complete.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Any

from app.jobs.checkpoints import COMPLETE_MARKER
from worker.protocol import progress, run_child


def merge(job: dict[str, Any]) -> dict[str, Any]:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    output = Path(job["output_dir"])
    partial = output.with_name(output.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    cuda = torch.cuda.is_available()
    dtype = torch.bfloat16 if cuda and torch.cuda.is_bf16_supported() else torch.float32
    progress(0.05, "merge_loading")
    base = AutoModelForCausalLM.from_pretrained(
        job["model_dir"], dtype=dtype, use_safetensors=True, trust_remote_code=False
    )
    tuned = PeftModel.from_pretrained(base, job["adapter_dir"])
    progress(0.5, "merge_merging")
    merged = tuned.merge_and_unload()
    progress(0.7, "merge_saving")
    merged.save_pretrained(str(partial), safe_serialization=True)
    tokenizer = AutoTokenizer.from_pretrained(job["adapter_dir"], trust_remote_code=False)
    if job.get("chat_template"):
        tokenizer.chat_template = job["chat_template"]
    tokenizer.save_pretrained(str(partial))
    size = sum(p.stat().st_size for p in partial.rglob("*") if p.is_file())
    (partial / COMPLETE_MARKER).write_text(json.dumps({"size_bytes": size}))
    shutil.rmtree(output, ignore_errors=True)
    partial.rename(output)
    return {"size_bytes": size, "dtype": str(dtype).removeprefix("torch.")}


def main(job: dict[str, Any]) -> int:
    return run_child(merge, job, error_code="merge_error")


if __name__ == "__main__":
    sys.exit(main(json.loads(sys.argv[1])))
