"""Writing GGUF files with the gguf library of the llama.cpp project: a whole model (f16, q8_0 or q4_0) and a
LoRA adapter (the layout llama.cpp's ``--lora`` and Ollama's ``ADAPTER`` read).

Tensor names come from the library's name map. Llama's query and key rows are stored in llama.cpp's rotary
order (pairs interleaved per head), which transformers' GGUF loader undoes when it reads the file back; a LoRA's
B matrix of a query or key projection is reordered the same way, since its rows are the projection's rows.
Only byte-level BPE tokenizers (GPT-2 style: SmolLM2, Qwen2, Llama 3) are written; SentencePiece vocabularies
are refused with the reason."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

FORMATS = ("f16", "q8_0", "q4_0")
LORA_FORMAT = "lora"
# transformers model_type -> GGUF architecture; both read back by transformers' GGUF loader
ARCHITECTURES = {"llama": "llama", "qwen2": "qwen2"}
PERMUTED = {"llama"}  # architectures whose q/k rows llama.cpp stores in its rotary order
BLOCK = 32  # q8_0 and q4_0 quantise rows in blocks of 32 values


class Unsupported(ValueError):
    """The model, tokenizer or adapter cannot be written as GGUF; the message says why."""


@dataclass(frozen=True)
class Shape:
    arch: str
    blocks: int
    heads: int
    kv_heads: int


def shape_of(config: Any) -> Shape:
    arch = ARCHITECTURES.get(getattr(config, "model_type", ""))
    if arch is None:
        raise Unsupported(
            f"GGUF export writes {', '.join(sorted(ARCHITECTURES))} models; this one is "
            f"{getattr(config, 'model_type', 'unknown')}."
        )
    rope = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {}
    if rope.get("rope_type", rope.get("type", "default")) not in ("default", None):
        raise Unsupported(f"Models with {rope.get('rope_type') or rope.get('type')} RoPE scaling are not written yet.")
    return Shape(
        arch=arch,
        blocks=int(config.num_hidden_layers),
        heads=int(config.num_attention_heads),
        kv_heads=int(getattr(config, "num_key_value_heads", None) or config.num_attention_heads),
    )


def rotary_rows(rows: np.ndarray, heads: int) -> np.ndarray:
    """Reorder a query or key projection's rows (or a LoRA B's) from Hugging Face's rotary layout (halves) to
    llama.cpp's (interleaved pairs), head by head."""
    per_head = rows.shape[0] // heads
    grouped = rows.reshape(heads, 2, per_head // 2, *rows.shape[1:])
    return grouped.swapaxes(1, 2).reshape(rows.shape)


def _name_map(shape: Shape) -> Any:
    import gguf

    arch = next(key for key, value in gguf.MODEL_ARCH_NAMES.items() if value == shape.arch)
    return gguf.get_tensor_name_map(arch, shape.blocks)


def _gguf_name(names: Any, hf_name: str) -> str:
    found = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
    if found is None:
        raise Unsupported(f"No GGUF name for the tensor {hf_name}.")
    return str(found)


def _oriented(shape: Shape, gguf_name: str, array: np.ndarray) -> np.ndarray:
    if shape.arch in PERMUTED and ".attn_q." in gguf_name:
        return rotary_rows(array, shape.heads)
    if shape.arch in PERMUTED and ".attn_k." in gguf_name:
        return rotary_rows(array, shape.kv_heads)
    return array


def _quantised(gguf: Any, name: str, array: np.ndarray, fmt: str) -> tuple[np.ndarray, Any]:
    """The tensor's data in the file's type: norms and biases stay float32; a matrix whose rows do not split
    into whole blocks is written as f16; in q4_0 files the embeddings and output keep 8 bits, as llama.cpp's
    own quantiser does."""
    types = gguf.GGMLQuantizationType
    if array.ndim < 2:
        return array.astype(np.float32), types.F32
    wanted = {"f16": types.F16, "q8_0": types.Q8_0, "q4_0": types.Q4_0}[fmt]
    if wanted == types.Q4_0 and name in ("token_embd.weight", "output.weight"):
        wanted = types.Q8_0
    if wanted != types.F16 and array.shape[-1] % BLOCK:
        wanted = types.F16
    if wanted == types.F16:
        return array.astype(np.float16), types.F16
    return gguf.quants.quantize(array.astype(np.float32), wanted), wanted


def _file_type(gguf: Any, fmt: str) -> int:
    kinds = gguf.LlamaFileType
    return int({"f16": kinds.MOSTLY_F16, "q8_0": kinds.MOSTLY_Q8_0, "q4_0": kinds.MOSTLY_Q4_0}[fmt])


def _hyperparameters(writer: Any, config: Any, shape: Shape) -> None:
    rope = getattr(config, "rope_parameters", None) or {}
    theta = getattr(config, "rope_theta", None) or rope.get("rope_theta") or 10000.0
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // shape.heads
    writer.add_context_length(int(config.max_position_embeddings))
    writer.add_embedding_length(int(config.hidden_size))
    writer.add_block_count(shape.blocks)
    writer.add_feed_forward_length(int(config.intermediate_size))
    writer.add_head_count(shape.heads)
    writer.add_head_count_kv(shape.kv_heads)
    writer.add_layer_norm_rms_eps(float(config.rms_norm_eps))
    writer.add_rope_freq_base(float(theta))
    writer.add_rope_dimension_count(int(head_dim))
    writer.add_vocab_size(int(config.vocab_size))


def _tokenizer(writer: Any, tokenizer_dir: Path, vocab_size: int, chat_template: str | None, pre: str) -> None:
    """Tokens, merges, special tokens and the chat template. Special added tokens are control tokens; ids past
    the tokenizer's own (padding rows of the embedding) are written as unused."""
    import gguf

    try:
        vocab = gguf.BpeVocab(tokenizer_dir)
    except FileNotFoundError as exc:
        raise Unsupported(
            "Only byte-level BPE tokenizers (GPT-2 style, as SmolLM2, Qwen2 and Llama 3 use) are written to GGUF; "
            "this model's tokenizer is SentencePiece-style."
        ) from exc
    added = json.loads((tokenizer_dir / "tokenizer.json").read_text(encoding="utf-8")).get("added_tokens") or []
    control = {int(t["id"]) for t in added if t.get("special")}
    tokens: list[str | bytes] = []
    types: list[int] = []
    for index, (text, _score, kind) in enumerate(vocab.all_tokens()):
        tokens.append(text)
        types.append(int(gguf.TokenType.CONTROL if index in control else kind))
    if len(tokens) > vocab_size:
        raise Unsupported(f"The tokenizer has {len(tokens)} tokens but the model's embedding only {vocab_size}.")
    for index in range(len(tokens), vocab_size):
        tokens.append(f"[PAD{index}]")
        types.append(int(gguf.TokenType.UNUSED))
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    special = gguf.SpecialVocab(tokenizer_dir, load_merges=True, n_vocab=vocab_size)
    special.chat_template = chat_template or special.chat_template
    special.add_to_gguf(writer, quiet=True)


def write_model(
    path: Path,
    *,
    config: Any,
    tensors: Iterable[tuple[str, np.ndarray]],
    count: int,
    tokenizer_dir: Path,
    fmt: str,
    name: str,
    chat_template: str | None,
    pre: str = "default",
    progress: Callable[[float], None] = lambda fraction: None,
) -> dict[str, Any]:
    """Write a whole model. ``tensors`` are Hugging Face names with float32 arrays; a tied output layer is
    left out, as llama.cpp reads the embedding for it."""
    import gguf

    if fmt not in FORMATS:
        raise Unsupported(f"GGUF types written: {', '.join(FORMATS)}; not {fmt}.")
    shape = shape_of(config)
    names = _name_map(shape)
    writer = gguf.GGUFWriter(str(path), shape.arch)
    writer.add_type(gguf.GGUFType.MODEL)
    writer.add_name(name)
    writer.add_file_type(_file_type(gguf, fmt))
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    _hyperparameters(writer, config, shape)
    _tokenizer(writer, tokenizer_dir, int(config.vocab_size), chat_template, pre)
    tied = bool(getattr(config, "tie_word_embeddings", False))
    kinds: dict[str, int] = {}
    for index, (hf_name, array) in enumerate(tensors):
        if tied and hf_name == "lm_head.weight":
            continue
        gguf_name = _gguf_name(names, hf_name)
        data, kind = _quantised(gguf, gguf_name, _oriented(shape, gguf_name, array), fmt)
        writer.add_tensor(gguf_name, data, raw_dtype=kind)  # a quantised tensor's shape is read from its bytes
        kinds[kind.name] = kinds.get(kind.name, 0) + 1
        progress((index + 1) / max(count, 1))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return {"tensor_types": kinds, "size_bytes": path.stat().st_size}


LORA_SITES = {
    "q_proj": "self_attn.q_proj",
    "k_proj": "self_attn.k_proj",
    "v_proj": "self_attn.v_proj",
    "o_proj": "self_attn.o_proj",
    "gate_proj": "mlp.gate_proj",
    "up_proj": "mlp.up_proj",
    "down_proj": "mlp.down_proj",
}


def lora_scale_alpha(adapter_config: dict[str, Any], rank: int) -> float:
    """llama.cpp scales a LoRA by alpha / rank; rank-stabilised LoRA scales by alpha / sqrt(rank), which is the
    same as writing alpha * sqrt(rank)."""
    alpha = float(adapter_config.get("lora_alpha") or rank)
    return alpha * rank**0.5 if adapter_config.get("use_rslora") else alpha


def write_lora(
    path: Path, *, config: Any, adapter_config: dict[str, Any], weights: dict[str, np.ndarray], name: str
) -> dict[str, Any]:
    """Write a PEFT LoRA (without DoRA, with one rank and alpha for every layer) as a GGUF LoRA adapter."""
    import gguf

    shape = shape_of(config)
    if adapter_config.get("peft_type") != "LORA" or adapter_config.get("use_dora"):
        raise Unsupported("Only plain LoRA adapters (not DoRA, IA3 or prompt tuning) are written as GGUF LoRA files.")
    if adapter_config.get("rank_pattern") or adapter_config.get("alpha_pattern"):
        raise Unsupported("A LoRA with a different rank or alpha per layer cannot be written as one GGUF LoRA file.")
    rank = int(adapter_config["r"])
    names = _name_map(shape)
    writer = gguf.GGUFWriter(str(path), shape.arch)
    writer.add_type(gguf.GGUFType.ADAPTER)
    writer.add_name(name)
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, lora_scale_alpha(adapter_config, rank))
    pairs = 0
    for key in sorted(weights):
        if not key.endswith(".lora_A.weight"):
            if not key.endswith(".lora_B.weight"):
                raise Unsupported(f"The adapter holds {key}, which a GGUF LoRA file cannot carry.")
            continue
        module = key.removesuffix(".lora_A.weight")
        site = module.split(".layers.", 1)
        if len(site) != 2 or site[1].split(".", 1)[1] not in LORA_SITES.values():
            raise Unsupported(f"LoRA on {module} is not written to GGUF (attention and MLP projections only).")
        hf_name = f"model.layers.{site[1]}.weight"
        gguf_name = _gguf_name(names, hf_name)
        lora_a = weights[key].astype(np.float32)
        lora_b = _oriented(shape, gguf_name, weights[f"{module}.lora_B.weight"].astype(np.float32))
        writer.add_tensor(f"{gguf_name}.lora_a", lora_a.astype(np.float16))
        writer.add_tensor(f"{gguf_name}.lora_b", lora_b.astype(np.float16))
        pairs += 1
    if not pairs:
        raise Unsupported("The adapter holds no LoRA matrices.")
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return {"lora_pairs": pairs, "rank": rank, "size_bytes": path.stat().st_size}
