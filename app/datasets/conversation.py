"""Validating conversations: roles, content and turn order, shared by every record format."""

from __future__ import annotations

import json
import re
from typing import Any

CHAT_ROLES = ("system", "user", "assistant", "tool")
SHAREGPT_ROLES = {
    "system": "system",
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "function_call": "assistant",
    "observation": "tool",
    "tool": "tool",
}
HH_TURN = re.compile(r"\n\n(Human|Assistant): ?")

Message = dict[str, Any]


class Invalid(ValueError):
    """A record is wrong: a code (see app/datasets/messages.py) and the parameters of its sentence."""

    def __init__(self, code: str, **params: Any) -> None:
        super().__init__(code)
        self.code = code
        self.params = params


def message_text(message: dict[str, Any], index: int) -> str:
    content = message.get("content")
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # OpenAI content parts: text only
        parts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise Invalid("wrong_type", field=f"messages[{index}].content", expected="text parts")
            parts.append(part["text"])
        return "".join(parts)
    raise Invalid("wrong_type", field=f"messages[{index}].content", expected="text")


def check_conversation(
    messages: Any,
    *,
    field: str = "messages",
    need_assistant: bool = True,
    end_with_assistant: bool = False,
    check_order: bool = True,
) -> list[Message]:
    """Validate roles, content and turn order; returns clean messages."""
    if not isinstance(messages, list) or not messages:
        raise Invalid("wrong_type", field=field, expected="a non-empty list of messages")
    clean: list[Message] = []
    for index, message in enumerate(messages, start=1):
        if not isinstance(message, dict):
            raise Invalid("wrong_type", field=f"{field}[{index - 1}]", expected="an object with role and content")
        role = message.get("role")
        if role not in CHAT_ROLES:
            raise Invalid("unknown_role", index=index, role=str(role)[:30], allowed=", ".join(CHAT_ROLES))
        content = message_text(message, index - 1)
        tool_calls = message.get("tool_calls")
        if not content.strip() and not (role == "assistant" and tool_calls):
            raise Invalid("empty_content", index=index, role=role)
        item: Message = {"role": role, "content": content}
        if tool_calls:
            item["tool_calls"] = tool_calls
        clean.append(item)
    if check_order:
        _check_order(clean)
    if need_assistant and not any(m["role"] == "assistant" for m in clean):
        raise Invalid("no_assistant_turn")
    if end_with_assistant and clean[-1]["role"] != "assistant":
        raise Invalid(
            "roles_out_of_order",
            index=len(clean),
            role=clean[-1]["role"],
            previous=clean[-1]["role"],
            expected="assistant",
        )
    return clean


def _check_order(messages: list[Message]) -> None:
    previous = "the start"
    for index, message in enumerate(messages, start=1):
        role = message["role"]
        if role == "system":
            allowed = previous == "the start"
            expected = "user"
        elif role == "user":
            allowed = previous in ("the start", "system", "assistant")
            expected = "assistant"
        elif role == "assistant":
            allowed = previous in ("user", "tool")
            expected = "user"
        else:  # tool results answer an assistant's tool call
            allowed = previous in ("assistant", "tool") and _called_tools(messages, index - 2)
            expected = "assistant"
        if not allowed:
            raise Invalid(
                "roles_out_of_order",
                index=index,
                role=role,
                previous=previous,
                expected=expected if previous != "the start" else "system or user",
            )
        previous = role


def _called_tools(messages: list[Message], index: int) -> bool:
    while index >= 0 and messages[index]["role"] == "tool":
        index -= 1
    return index >= 0 and messages[index]["role"] == "assistant" and bool(messages[index].get("tool_calls"))


def assistant_messages(text: Any, field: str) -> list[Message]:
    if isinstance(text, str):
        if not text.strip():
            raise Invalid("empty_content", index=1, role="assistant")
        return [{"role": "assistant", "content": text}]
    if isinstance(text, list):
        messages = check_conversation(text, field=field, check_order=False)
        if any(m["role"] != "assistant" for m in messages):
            raise Invalid("wrong_type", field=field, expected="assistant messages only")
        return messages
    raise Invalid("wrong_type", field=field, expected="text or a list of messages")


def sharegpt_messages(turns: Any, field: str = "conversations") -> list[Message]:
    if not isinstance(turns, list) or not turns:
        raise Invalid("wrong_type", field=field, expected="a non-empty list of {from, value}")
    messages: list[Message] = []
    for index, turn in enumerate(turns, start=1):
        if not isinstance(turn, dict):
            raise Invalid("wrong_type", field=f"{field}[{index - 1}]", expected="an object with from and value")
        speaker = turn.get("from")
        if speaker not in SHAREGPT_ROLES:
            raise Invalid(
                "unknown_role",
                index=index,
                role=str(speaker)[:30],
                allowed="human, gpt, system, function_call, observation",
            )
        value = turn.get("value")
        if not isinstance(value, str):
            raise Invalid("wrong_type", field=f"{field}[{index - 1}].value", expected="text")
        message: Message = {"role": SHAREGPT_ROLES[speaker], "content": value}
        if speaker == "function_call":
            message["tool_calls"] = [{"type": "function", "function": _function_call(value)}]
        messages.append(message)
    return messages


def _function_call(value: str) -> dict[str, Any]:
    try:
        call = json.loads(value)
    except ValueError:
        return {"name": "", "arguments": value}
    return call if isinstance(call, dict) else {"name": "", "arguments": value}


def parse_transcript(text: str, field: str) -> list[Message]:
    """'\\n\\nHuman: …\\n\\nAssistant: …' into messages."""
    parts = HH_TURN.split("\n\n" + text.lstrip("\n") if not text.startswith("\n\n") else text)
    if len(parts) < 3:
        raise Invalid("wrong_type", field=field, expected="a transcript of Human: / Assistant: turns")
    messages = []
    for speaker, content in zip(parts[1::2], parts[2::2], strict=True):
        messages.append({"role": "user" if speaker == "Human" else "assistant", "content": content.strip()})
    return messages
