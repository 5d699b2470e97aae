"""Child process: write a job's model as GGUF (the adapter merged into its base, or a full fine-tune's weights)
with an Ollama Modelfile beside it, or its LoRA as a GGUF LoRA adapter.

Written into ``<output>.partial`` and renamed when complete, like the merge; the merge's safetensors are read
when they exist, otherwise the adapter is merged in memory (float32)."""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from app.jobs.checkpoints import COMPLETE_MARKER
from worker.export import gguf_write, ollama
from worker.protocol import progress, run_child

WHOLE_MODEL_ADAPTERS = {"full", "freeze"}


def file_name(fmt: str) -> str:
    return "adapter-lora-f16.gguf" if fmt == gguf_write.LORA_FORMAT else f"model-{fmt}.gguf"


def _pre_tokenizer(source_gguf: str | None) -> str:
    """llama.cpp's name for the pre-tokenizer, copied from the GGUF the base model was imported from; without
    one, llama.cpp's default."""
    if not source_gguf or not Path(source_gguf).is_file():
        return "default"
    import gguf

    field = gguf.GGUFReader(source_gguf).get_field("tokenizer.ggml.pre")
    return str(field.contents()) if field is not None else "default"


def _load(job: dict[str, Any]) -> Any:
    import torch
    from transformers import AutoModelForCausalLM

    options: dict[str, Any] = {"dtype": torch.float32, "use_safetensors": True, "trust_remote_code": False}
    if job["adapter"] in WHOLE_MODEL_ADAPTERS:
        return AutoModelForCausalLM.from_pretrained(job["adapter_dir"], **options)
    if job.get("merged_dir"):
        return AutoModelForCausalLM.from_pretrained(job["merged_dir"], **options)
    from peft import PeftModel

    base = AutoModelForCausalLM.from_pretrained(job["model_dir"], **options)
    progress(0.2, "merge_merging")
    return PeftModel.from_pretrained(base, job["adapter_dir"]).merge_and_unload()


def _whole_model(job: dict[str, Any], partial: Path) -> dict[str, Any]:
    from transformers import AutoTokenizer

    progress(0.05, "merge_loading")
    model = _load(job)
    tokenizer = AutoTokenizer.from_pretrained(job["adapter_dir"], trust_remote_code=False)
    if job.get("chat_template"):
        tokenizer.chat_template = job["chat_template"]
    name = file_name(job["format"])
    state = model.state_dict()
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer.save_pretrained(tmp)  # tokenizer.json and tokenizer_config.json, as the vocabulary readers want

        def writing(fraction: float) -> None:
            progress(0.3 + 0.6 * fraction, "gguf_writing", format=job["format"])

        result = gguf_write.write_model(
            partial / name,
            config=model.config,
            tensors=((key, value.detach().float().numpy()) for key, value in state.items()),
            count=len(state),
            tokenizer_dir=Path(tmp),
            fmt=job["format"],
            name=job["name"],
            chat_template=tokenizer.chat_template,
            pre=_pre_tokenizer(job.get("source_gguf")),
            progress=writing,
        )
    adds_bos = bool(tokenizer.bos_token_id is not None and tokenizer("x")["input_ids"][:1] == [tokenizer.bos_token_id])

    def render(messages: list[dict[str, str]], generation: bool) -> str:
        return str(tokenizer.apply_chat_template(messages, add_generation_prompt=generation, tokenize=False))

    text, left_out = ollama.modelfile(
        name, render, bos=tokenizer.bos_token if adds_bos else None, eos=tokenizer.eos_token
    )
    (partial / "Modelfile").write_text(text, encoding="utf-8")
    return {**result, "file": name, "modelfile": True, "template_left_out": left_out}


def _lora(job: dict[str, Any], partial: Path) -> dict[str, Any]:
    from safetensors.numpy import load_file
    from transformers import AutoConfig

    progress(0.1, "merge_loading")
    adapter_dir = Path(job["adapter_dir"])
    adapter_config = json.loads((adapter_dir / "adapter_config.json").read_text(encoding="utf-8"))
    weights = load_file(str(adapter_dir / "adapter_model.safetensors"))
    config = AutoConfig.from_pretrained(job["model_dir"], trust_remote_code=False)
    progress(0.4, "gguf_writing", format="lora")
    name = file_name(gguf_write.LORA_FORMAT)
    result = gguf_write.write_lora(
        partial / name, config=config, adapter_config=adapter_config, weights=weights, name=job["name"]
    )
    return {**result, "file": name, "modelfile": False, "template_left_out": None}


def export(job: dict[str, Any]) -> dict[str, Any]:
    output = Path(job["output_dir"])
    partial = output.with_name(output.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    result = _lora(job, partial) if job["format"] == gguf_write.LORA_FORMAT else _whole_model(job, partial)
    result["format"] = job["format"]
    (partial / COMPLETE_MARKER).write_text(json.dumps(result))
    shutil.rmtree(output, ignore_errors=True)
    partial.rename(output)
    return result


def main(job: dict[str, Any]) -> int:
    return run_child(export, job, error_code="gguf_error")


if __name__ == "__main__":
    sys.exit(main(json.loads(sys.argv[1])))
