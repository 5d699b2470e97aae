"""What the model sees: render a conversation with the base model's chat template, tokenize it, and mark
the tokens that are trained (assistant turns only by default; an assistant turn with OpenAI's ``weight: 0`` is
context only, as on OpenAI).

Many templates (SmolLM2's among them) have no generation markers, so the mask is built from the rendered
turns: the text added by each assistant message, minus the assistant header, is trained; every token that
overlaps it is marked. Uses jinja2 and the `tokenizers` library only (no torch), the same way
transformers renders templates (sandboxed, trim_blocks, lstrip_blocks).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

from jinja2 import TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment


@dataclass(frozen=True)
class Token:
    text: str
    trained: bool


class TemplateRenderError(ValueError):
    pass


def _raise(message: str) -> None:
    raise TemplateRenderError(message)


@lru_cache(maxsize=16)
def _compiled(template: str) -> Any:
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = _raise
    env.globals["strftime_now"] = lambda fmt: datetime.now(UTC).strftime(fmt)
    return env.from_string(template)


@dataclass
class ChatRenderer:
    template: str
    tokenizer_file: Path
    bos_token: str = ""
    eos_token: str = ""

    def render(
        self,
        messages: list[dict[str, Any]],
        *,
        add_generation_prompt: bool = False,
        tools: list[dict[str, Any]] | None = None,
    ) -> str:
        try:
            return str(
                _compiled(self.template).render(
                    messages=messages,
                    tools=tools or None,
                    add_generation_prompt=add_generation_prompt,
                    bos_token=self.bos_token,
                    eos_token=self.eos_token,
                )
            )
        except TemplateError as exc:
            raise TemplateRenderError(str(exc)) from exc

    def trained_spans(
        self,
        messages: list[dict[str, Any]],
        roles: tuple[str, ...] = ("assistant",),
        tools: list[dict[str, Any]] | None = None,
    ) -> tuple[str, list[tuple[int, int]]]:
        full = self.render(messages, tools=tools)
        spans = []
        for index, message in enumerate(messages):
            if message["role"] not in roles or index == 0 or message.get("weight") == 0:
                continue
            before = self.render(messages[:index], add_generation_prompt=message["role"] == "assistant", tools=tools)
            after = self.render(messages[: index + 1], tools=tools)
            if not full.startswith(after) or not after.startswith(before):
                # the template rewrites earlier text: fall back to the message's own content
                start = full.find(message["content"])
                if start >= 0:
                    spans.append((start, start + len(message["content"])))
                continue
            end = len(after.rstrip())  # the end-of-turn token is trained; the newline after it is not
            spans.append((len(before), end))
        return full, spans

    def tokens(
        self,
        messages: list[dict[str, Any]],
        roles: tuple[str, ...] = ("assistant",),
        tools: list[dict[str, Any]] | None = None,
    ) -> list[Token]:
        text, spans = self.trained_spans(messages, roles, tools)
        encoding = _tokenizer(str(self.tokenizer_file)).encode(text, add_special_tokens=False)
        out = []
        shown = 0  # byte-level tokens can share one character: show each character once
        for start, end in encoding.offsets:
            trained = any(start < s_end and end > s_start for s_start, s_end in spans)
            out.append(Token(text[max(start, shown) : end], trained))
            shown = max(shown, end)
        return out

    def encode(
        self,
        messages: list[dict[str, Any]],
        roles: tuple[str, ...] = ("assistant",),
        tools: list[dict[str, Any]] | None = None,
    ) -> tuple[list[int], list[int]]:
        """Token ids of the rendered conversation and the training mask (1 = learn this token)."""
        text, spans = self.trained_spans(messages, roles, tools)
        encoding = _tokenizer(str(self.tokenizer_file)).encode(text, add_special_tokens=False)
        mask = [
            int(any(start < s_end and end > s_start for s_start, s_end in spans)) for start, end in encoding.offsets
        ]
        return list(encoding.ids), mask

    def token_ids(self, text: str) -> list[int]:
        return list(_tokenizer(str(self.tokenizer_file)).encode(text, add_special_tokens=False).ids)

    def count(self, text: str) -> int:
        return len(_tokenizer(str(self.tokenizer_file)).encode(text, add_special_tokens=False).ids)


@lru_cache(maxsize=8)
def _tokenizer(path: str) -> Any:
    from tokenizers import Tokenizer

    return Tokenizer.from_file(path)


def renderer_for(model_dir: Path, chat_template: str | None) -> ChatRenderer | None:
    """A renderer for a stored base model, or None when it has no tokenizer.json or template."""
    import json

    tokenizer_file = model_dir / "tokenizer.json"
    if not tokenizer_file.is_file() or not chat_template:
        return None
    config: dict[str, Any] = {}
    if (model_dir / "tokenizer_config.json").is_file():
        config = json.loads((model_dir / "tokenizer_config.json").read_text())

    def token(name: str) -> str:
        value = config.get(name)
        if isinstance(value, dict):
            value = value.get("content")
        return value if isinstance(value, str) else ""

    return ChatRenderer(chat_template, tokenizer_file, token("bos_token"), token("eos_token"))


def record_text(kind: str, data: dict[str, Any]) -> list[list[dict[str, Any]]]:
    """The conversations a record trains on (a preference pair gives two)."""
    if kind in ("chat", "kto", "prompt"):
        return [data["messages"]]
    if kind == "preference":
        return [data["prompt"] + data["chosen"], data["prompt"] + data["rejected"]]
    return []


# No tokenizer's token spans this many characters: a text longer than this many times the context cannot fit,
# and only its beginning is tokenised to say by how much (a 30 MB record is never tokenised whole).
MAX_CHARS_PER_TOKEN = 64


def record_tokens(
    renderer: ChatRenderer | None, kind: str, data: dict[str, Any], context: int | None = None
) -> int | None:
    """How many tokens the model sees for a record (the longer side of a preference pair), rendered with the
    chat template; None without a renderer or when the template cannot render the record. With ``context``,
    a text far past it is counted only as far as proves it too long."""
    if renderer is None:
        return None

    def count(text: str) -> int:
        if context and len(text) > context * MAX_CHARS_PER_TOKEN:
            text = text[: context * MAX_CHARS_PER_TOKEN]
        return renderer.count(text)

    try:
        if kind == "text":
            return count(data["text"])
        tools = data.get("tools")
        return max(count(renderer.render(conversation, tools=tools)) for conversation in record_text(kind, data))
    except TemplateRenderError:
        return None
