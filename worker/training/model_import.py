"""Child process: bring a base model into the artifact store as safetensors.

Sources: the bundled GGUF (de-quantised once, saved as safetensors), a local Hugging Face directory
(copied; only safetensors weights), or a hub repository (downloaded; only safetensors weights).
Writes to a temporary directory and renames it when complete. Never ``trust_remote_code``.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Any

from worker.protocol import emit, exit_with_parent, fail, progress

COPY_PATTERNS = ("*.json", "*.safetensors", "*.jinja", "tokenizer.model", "*.txt", "README.md")
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".ckpt")


def _convert_gguf(gguf: Path, tmp: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    progress(0.05, "gguf_tokenizer")
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    progress(0.35, "gguf_weights")
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    # The loaded weights are plain float tensors now; drop the GGUF quantiser so the saved
    # directory is an ordinary safetensors model.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    progress(0.8, "writing_safetensors")
    model.save_pretrained(str(tmp), safe_serialization=True)
    tokenizer.save_pretrained(str(tmp))


def _copy_local(src: Path, tmp: Path) -> None:
    files = [p for pattern in COPY_PATTERNS for p in src.glob(pattern) if p.is_file()]
    total = sum(p.stat().st_size for p in files) or 1
    done = 0
    for path in files:
        shutil.copyfile(path, tmp / path.name)
        done += path.stat().st_size
        progress(0.05 + 0.85 * done / total, "copying", file=path.name)


def _download_hub(repo_id: str, revision: str, endpoint: str, tmp: Path) -> None:
    from huggingface_hub import snapshot_download

    progress(0.05, "downloading", repo=repo_id, revision=revision)
    snapshot_download(
        repo_id=repo_id,
        revision=revision,
        endpoint=endpoint,
        local_dir=str(tmp),
        allow_patterns=list(COPY_PATTERNS),
    )


def describe(directory: Path, license_hint: str | None) -> dict[str, Any]:
    """Metadata read without loading weights: tensor shapes come from the safetensors headers."""
    from safetensors import safe_open
    from transformers import AutoConfig

    weights = sorted(directory.glob("*.safetensors"))
    if not weights:
        raise ValueError("no .safetensors weights")
    num_parameters = 0
    for path in weights:
        with safe_open(str(path), framework="pt") as handle:
            for name in handle.keys():  # noqa: SIM118  (safe_open is not a mapping)
                shape = handle.get_slice(name).get_shape()
                count = 1
                for dim in shape:
                    count *= int(dim)
                num_parameters += count
    config = AutoConfig.from_pretrained(str(directory), trust_remote_code=False)
    context = next(
        (
            getattr(config, key)
            for key in ("max_position_embeddings", "n_positions", "max_seq_len")
            if getattr(config, key, None)
        ),
        None,
    )
    chat_template = None
    if (directory / "chat_template.jinja").is_file():
        chat_template = (directory / "chat_template.jinja").read_text()
    elif (directory / "tokenizer_config.json").is_file():
        chat_template = json.loads((directory / "tokenizer_config.json").read_text()).get("chat_template")
    return {
        "architecture": (config.architectures or [config.model_type])[0],
        "num_parameters": num_parameters,
        "context_length": int(context) if context else None,
        "chat_template": chat_template if isinstance(chat_template, str) else None,
        "size_bytes": sum(p.stat().st_size for p in directory.iterdir() if p.is_file()),
        "license": license_hint or _readme_license(directory),
    }


def _readme_license(directory: Path) -> str | None:
    readme = directory / "README.md"
    if not readme.is_file():
        return None
    text = readme.read_text(errors="replace")
    if not text.startswith("---"):
        return None
    for line in text.split("\n---", 1)[0].splitlines():
        if line.startswith("license:"):
            return line.split(":", 1)[1].strip() or None
    return None


def main(spec: dict[str, Any]) -> int:
    exit_with_parent()
    dest = Path(spec["dest"])
    tmp = dest.with_name(dest.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        if spec["source"] == "bundled":
            _convert_gguf(Path(spec["source_ref"]), tmp)
        elif spec["source"] == "local":
            _copy_local(Path(spec["source_ref"]), tmp)
        elif spec["source"] == "hub":
            _download_hub(spec["source_ref"], spec.get("revision") or "main", spec["hub_endpoint"], tmp)
        else:
            fail("internal", "unknown_source", source=repr(spec["source"]))
            return 1
        if any(p.suffix in PICKLE_SUFFIXES for p in tmp.iterdir()):
            fail("model_load", "pickle_weights")
            return 1
        progress(0.92, "model_metadata")
        info = describe(tmp, spec.get("license"))
    except FileNotFoundError as exc:
        fail("model_load", "missing_file", file=str(exc.filename))
        return 1
    except Exception as exc:  # any reader error (safetensors, config, tokenizer) is the model's fault
        fail("model_load", "unreadable_model", detail=f"{type(exc).__name__}: {exc}")
        return 1
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)
    emit(result=info)
    return 0


if __name__ == "__main__":
    sys.exit(main(json.loads(sys.argv[1])))
