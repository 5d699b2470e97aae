"""The trained-token mask for SmolLM2's chat template (no generation markers), checked token by token."""

from __future__ import annotations

from pathlib import Path

from tokenizers import Tokenizer

from app.datasets.template import renderer_for


def test_exactly_the_assistant_tokens_are_trained(smollm2_tokenizer_dir: Path) -> None:
    renderer = renderer_for(smollm2_tokenizer_dir, (smollm2_tokenizer_dir / "chat_template.jinja").read_text())
    assert renderer is not None
    messages = [
        {"role": "system", "content": "Answer briefly."},
        {"role": "user", "content": "What is 2+2?"},
        {"role": "assistant", "content": "4"},
        {"role": "user", "content": "And in Chinese?"},
        {"role": "assistant", "content": "四，也就是 four."},
    ]
    text, spans = renderer.trained_spans(messages)
    assert [text[a:b] for a, b in spans] == ["4<|im_end|>", "四，也就是 four.<|im_end|>"]

    tokenizer = Tokenizer.from_file(str(smollm2_tokenizer_dir / "tokenizer.json"))
    encoding = tokenizer.encode(text, add_special_tokens=False)
    tokens = renderer.tokens(messages)
    assert len(tokens) == len(encoding.ids)
    trained_ids = [i for i, t in zip(encoding.ids, tokens, strict=True) if t.trained]
    expected = (
        tokenizer.encode("4<|im_end|>", add_special_tokens=False).ids
        + tokenizer.encode("四，也就是 four.<|im_end|>", add_special_tokens=False).ids
    )
    assert trained_ids == expected
    im_end = tokenizer.token_to_id("<|im_end|>")
    # every turn ends with <|im_end|>; only the assistants' ones are trained
    flags = [t.trained for i, t in zip(encoding.ids, tokens, strict=True) if i == im_end]
    assert flags == [False, False, True, False, True]
    assert "".join(t.text for t in tokens) == text  # the view shows every character exactly once


def test_default_system_prompt_is_context_not_training(smollm2_tokenizer_dir: Path) -> None:
    renderer = renderer_for(smollm2_tokenizer_dir, (smollm2_tokenizer_dir / "chat_template.jinja").read_text())
    assert renderer is not None
    tokens = renderer.tokens([{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}])
    assert "SmolLM" in "".join(t.text for t in tokens)  # the template's own system prompt is rendered
    assert "".join(t.text for t in tokens if t.trained) == "Hello<|im_end|>"
