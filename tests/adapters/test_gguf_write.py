"""The GGUF writer and the Modelfile translation without the web: a tiny random Qwen2 (biases on q/k/v, no rotary
reordering) written and read back; architectures, tokenizers and adapters the writer refuses, with the reason;
chat templates that translate to Ollama's language (ChatML, Llama 3 style, a default system prompt) and ones that
do not."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from tests.adapters import gotemplate
from worker.export import gguf_write, ollama


def test_a_qwen2_model_reads_back_with_its_logits(smollm2_tokenizer_dir: Path, tmp_path: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(1)
    tokenizer = AutoTokenizer.from_pretrained(str(smollm2_tokenizer_dir))
    config = Qwen2Config(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=len(tokenizer),
        max_position_embeddings=512,
        tie_word_embeddings=True,
    )
    model = Qwen2ForCausalLM(config).eval()
    with torch.no_grad():  # biases that matter, so that a lost bias shows in the logits
        for layer in model.model.layers:
            for projection in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj):
                projection.bias.normal_(0, 0.5)
    state = model.state_dict()
    result = gguf_write.write_model(
        tmp_path / "qwen.gguf",
        config=config,
        tensors=((k, v.numpy()) for k, v in state.items()),
        count=len(state),
        tokenizer_dir=smollm2_tokenizer_dir,
        fmt="f16",
        name="tiny qwen",
        chat_template=tokenizer.chat_template,
    )
    assert result["tensor_types"]["F32"] > 0 and "output.weight" not in str(result)  # tied: no output layer
    loaded = AutoModelForCausalLM.from_pretrained(str(tmp_path), gguf_file="qwen.gguf").eval()
    assert loaded.config.model_type == "qwen2"
    ids = torch.tensor([[1, 5, 9, 42, 7, 3]])
    with torch.no_grad():
        expected, got = model(input_ids=ids).logits, loaded(input_ids=ids).logits
    assert (got - expected).abs().max() <= 2e-3 * expected.abs().max()

    # 4-bit: the projections in q4_0 and the embedding in q8_0 (as llama.cpp's quantiser keeps it); the logits
    # move, but stay those of the same model
    result = gguf_write.write_model(
        tmp_path / "qwen-q4.gguf",
        config=config,
        tensors=((k, v.numpy()) for k, v in state.items()),
        count=len(state),
        tokenizer_dir=smollm2_tokenizer_dir,
        fmt="q4_0",
        name="tiny qwen",
        chat_template=None,
    )
    assert result["tensor_types"]["Q4_0"] == 14 and result["tensor_types"]["Q8_0"] == 1
    four_bit = AutoModelForCausalLM.from_pretrained(str(tmp_path), gguf_file="qwen-q4.gguf").eval()
    with torch.no_grad():
        rough = four_bit(input_ids=ids).logits
    correlation = torch.corrcoef(torch.stack([rough.flatten(), expected.flatten()]))[0, 1]
    assert correlation > 0.9, correlation


def test_what_the_writer_refuses_says_why(tmp_path: Path) -> None:
    from transformers import GPT2Config, LlamaConfig

    with pytest.raises(gguf_write.Unsupported, match="gpt2"):
        gguf_write.shape_of(GPT2Config())
    scaled = LlamaConfig(rope_scaling={"rope_type": "llama3", "factor": 8.0, "original_max_position_embeddings": 8192,
                                       "low_freq_factor": 1.0, "high_freq_factor": 4.0})  # fmt: skip
    with pytest.raises(gguf_write.Unsupported, match="llama3 RoPE scaling"):
        gguf_write.shape_of(scaled)
    config = LlamaConfig(num_hidden_layers=1, num_attention_heads=2, hidden_size=8)
    for adapter_config, why in (
        ({"peft_type": "LORA", "use_dora": True, "r": 2}, "DoRA"),
        ({"peft_type": "IA3"}, "plain LoRA"),
        ({"peft_type": "LORA", "r": 2, "rank_pattern": {"q_proj": 4}}, "rank or alpha per layer"),
    ):
        with pytest.raises(gguf_write.Unsupported, match=why):
            gguf_write.write_lora(
                tmp_path / "a.gguf", config=config, adapter_config=adapter_config, weights={}, name="x"
            )
    import numpy as np

    embedding = {"base_model.model.model.embed_tokens.lora_A.weight": np.zeros((2, 8), dtype=np.float32)}
    with pytest.raises(gguf_write.Unsupported, match="attention and MLP projections only"):
        gguf_write.write_lora(
            tmp_path / "b.gguf",
            config=config,
            adapter_config={"peft_type": "LORA", "r": 2},
            weights=embedding,
            name="x",
        )
    sentencepiece = tmp_path / "sp"
    sentencepiece.mkdir()
    (sentencepiece / "tokenizer.json").write_text(
        '{"model": {"type": "Unigram", "vocab": []}, "decoder": {"type": "Metaspace"}, "added_tokens": []}'
    )
    with pytest.raises(gguf_write.Unsupported, match="SentencePiece"):
        gguf_write._tokenizer(None, sentencepiece, 10, None, "default")


def test_rank_stabilised_lora_keeps_its_scale() -> None:
    assert gguf_write.lora_scale_alpha({"lora_alpha": 16}, 8) == 16
    assert gguf_write.lora_scale_alpha({"lora_alpha": 16, "use_rslora": True}, 16) / 16 == pytest.approx(16 / 4)


def test_exports_refused_for_adapters_and_models_the_writer_cannot_take() -> None:
    from app.adapters import exports

    def row(adapter: str, architecture: str = "LlamaForCausalLM", **spec: Any) -> Any:
        return SimpleNamespace(
            job=SimpleNamespace(spec={"adapter": adapter, **spec}), model=SimpleNamespace(architecture=architecture)
        )

    assert exports.refusal(row("lora"), "q8_0") is None and exports.refusal(row("full"), "f16") is None
    assert "Llama and Qwen2" in str(exports.refusal(row("lora", "GPT2LMHeadModel"), "f16"))
    assert "plain LoRA" in str(exports.refusal(row("lora", use_dora=True), "lora"))
    assert "plain LoRA" in str(exports.refusal(row("ia3"), "lora"))
    assert "cannot be folded" in str(exports.refusal(row("prefix_tuning"), "q4_0"))
    assert "not q5_k" in str(exports.refusal(row("lora"), "q5_k"))


def _render(template: str, bos: str = "") -> Any:
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    compiled = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True).from_string(template)
    return lambda messages, generation: compiled.render(
        messages=messages, add_generation_prompt=generation, bos_token=bos
    )


LLAMA3 = (
    "{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n"
    "{{ m['content'] | trim }}<|eot_id|>{% endfor %}"
    "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)
CHATML_DEFAULT_SYSTEM = (
    "{% if messages[0]['role'] != 'system' %}<|im_start|>system\nBe kind.<|im_end|>\n{% endif %}"
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
# Mistral's: the system prompt goes inside the first question, which no per-message wrapping can say
MISTRAL = (
    "{% set system = messages[0]['content'] if messages[0]['role'] == 'system' else '' %}"
    "{% for m in messages if m['role'] != 'system' %}{% if m['role'] == 'user' %}[INST] "
    "{% if loop.first and system %}{{ system }}\n\n{% endif %}{{ m['content'] }} [/INST]"
    "{% else %}{{ m['content'] }}</s>{% endif %}{% endfor %}"
)


@pytest.mark.parametrize(
    ("template", "bos", "system", "stop"),
    [(LLAMA3, "<|begin_of_text|>", None, "<|eot_id|>"), (CHATML_DEFAULT_SYSTEM, "", "Be kind.", "<|im_end|>")],
)
def test_chat_templates_translate_to_ollama(template: str, bos: str, system: str | None, stop: str) -> None:
    import re

    render = _render(template, bos)
    text, left_out = ollama.modelfile("m.gguf", render, bos=bos or None, eos=None)
    assert left_out is None and f'PARAMETER stop "{stop}"' in text
    found = re.search(r'SYSTEM """(.*?)"""', text, re.S)
    assert (found.group(1) if found else None) == system
    go = re.search(r'TEMPLATE """(.*?)"""', text, re.S).group(1)  # type: ignore[union-attr]
    conversation = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"},
                    {"role": "user", "content": "What is 2+2?"}]  # fmt: skip
    shown = [{"role": "system", "content": system}, *conversation] if system else conversation
    ollama_says = gotemplate.render(go, Messages=[{"Role": m["role"], "Content": m["content"]} for m in shown])
    assert bos + ollama_says == render(conversation, True)


def test_a_template_that_does_not_translate_is_left_out_with_the_reason() -> None:
    text, left_out = ollama.modelfile("m.gguf", _render(MISTRAL), bos=None, eos="</s>")
    assert text == "FROM ./m.gguf\n" and left_out
