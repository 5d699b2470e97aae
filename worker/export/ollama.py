"""An Ollama ``Modelfile`` for an exported GGUF: the model's chat template translated to Ollama's template language
(Go's text/template), its default system prompt and its stop tokens.

The translation does not parse Jinja. It renders small conversations with the model's own template and reads,
from the differences between them, the text each role's message is wrapped in and the text that asks for the
assistant's answer. Templates that wrap every message the same way (ChatML, Llama 3, Zephyr, Phi-3, SmolLM2) are
translated; the result is checked by rendering test conversations both ways, and a template that does not
translate exactly is left out of the Modelfile (Ollama then reads the template in the GGUF's metadata)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

Render = Callable[[list[dict[str, str]], bool], str]
SYSTEM, USER_1, ASSISTANT, USER_2 = "Ⓢ-system-text", "Ⓤ-first-question", "Ⓐ-first-answer", "Ⓤ-second-question"
ROLES = ("system", "user", "assistant")


class Untranslatable(ValueError):
    pass


@dataclass(frozen=True)
class Layout:
    """What wraps each role's message, what asks for an answer, and the system prompt used when none is given."""

    before: dict[str, str]
    after: dict[str, str]
    generation: str
    default_system: str

    def render(self, messages: list[dict[str, str]]) -> str:
        """A conversation as the Ollama template renders it (Ollama inserts the Modelfile's SYSTEM first)."""
        if self.default_system and (not messages or messages[0]["role"] != "system"):
            messages = [{"role": "system", "content": self.default_system}, *messages]
        body = "".join(self.before[m["role"]] + m["content"] + self.after[m["role"]] for m in messages)
        return body + self.generation

    def template(self) -> str:
        branches = "".join(
            f'{{{{ {"if" if index == 0 else "else if"} eq .Role "{role}" }}}}'
            f"{self.before[role]}{{{{ .Content }}}}{self.after[role]}"
            for index, role in enumerate(ROLES)
        )
        return f"{{{{ range .Messages }}}}{branches}{{{{ end }}}}{{{{ end }}}}{self.generation}"


def _split(text: str, marker: str) -> tuple[str, str]:
    if text.count(marker) != 1:
        raise Untranslatable("a message does not appear exactly once in the rendered conversation")
    before, after = text.split(marker)
    return before, after


def _after_prefix(longer: str, shorter: str) -> str:
    if not longer.startswith(shorter):
        raise Untranslatable("adding a message changes what was rendered before it")
    return longer[len(shorter) :]


def layout(render: Render, bos: str | None = None) -> Layout:
    """Read the template's layout from renders of small conversations. A beginning-of-sequence token the
    template writes itself is dropped: the runtime adds it from the GGUF's metadata."""

    def text(messages: list[tuple[str, str]], generation: bool = False) -> str:
        rendered = render([{"role": r, "content": c} for r, c in messages], generation)
        return rendered[len(bos) :] if bos and rendered.startswith(bos) else rendered

    one = text([("user", USER_1)])
    two = text([("user", USER_1), ("assistant", ASSISTANT)])
    three = text([("user", USER_1), ("assistant", ASSISTANT), ("user", USER_2)])
    before_a, after_a = _split(_after_prefix(two, one), ASSISTANT)
    before_u, after_u = _split(_after_prefix(three, two), USER_2)
    generation = _after_prefix(text([("user", USER_1)], True), one)
    head, tail = _split(one, USER_1)
    if tail != after_u or not head.endswith(before_u):
        raise Untranslatable("the first question is wrapped differently from the later ones")
    head = head[: len(head) - len(before_u)]
    with_system = text([("system", SYSTEM), ("user", USER_1)])
    before_s, rest = _split(with_system, SYSTEM)
    suffix = before_u + USER_1 + after_u
    if not rest.endswith(suffix):
        raise Untranslatable("the system message moves the first question")
    after_s = rest[: len(rest) - len(suffix)]
    default = ""
    if head:
        if not (head.startswith(before_s) and head.endswith(after_s)) or len(head) < len(before_s) + len(after_s):
            raise Untranslatable("text before the first message that is not a system message")
        default = head[len(before_s) : len(head) - len(after_s)]
        if not default:
            raise Untranslatable("an empty system block is written when no system message is given")
    found = Layout(
        before={"system": before_s, "user": before_u, "assistant": before_a},
        after={"system": after_s, "user": after_u, "assistant": after_a},
        generation=generation,
        default_system=default,
    )
    for conversation in _checks():
        if found.render(conversation) != text([(m["role"], m["content"]) for m in conversation], True):
            raise Untranslatable("the translated template renders a test conversation differently")
    if any("{{" in piece or '"""' in piece for piece in (*found.before.values(), *found.after.values(), generation)):
        raise Untranslatable("the template's text contains {{ or triple quotes")
    return found


def _checks() -> list[list[dict[str, str]]]:
    turns = [("user", "Name a colour."), ("assistant", "Blue."), ("user", "Another?")]
    plain = [{"role": r, "content": c} for r, c in turns]
    return [plain[:1], plain, [{"role": "system", "content": "Be brief."}, *plain]]


def modelfile(gguf_name: str, render: Render, *, bos: str | None, eos: str | None) -> tuple[str, str | None]:
    """The Modelfile's text, and why the template was left out (None when it is in)."""
    lines = [f"FROM ./{gguf_name}"]
    try:
        found = layout(render, bos)
    except Untranslatable as exc:
        return "\n".join(lines) + "\n", str(exc)
    lines.append(f'TEMPLATE """{found.template()}"""')
    if found.default_system:
        lines.append(f'SYSTEM """{found.default_system}"""')
    stops = [found.after["assistant"].strip(), (eos or "").strip()]
    for stop in dict.fromkeys(s for s in stops if s):
        lines.append(f'PARAMETER stop "{stop}"')
    return "\n".join(lines) + "\n", None
