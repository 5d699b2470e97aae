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


MEDIA_PARTS = {
    "image_url": "image",
    "image": "image",
    "input_image": "image",
    "input_audio": "audio",
    "audio": "audio",
    "audio_url": "audio",
    "video": "video",
    "video_url": "video",
    "file": "file",
    "input_file": "file",
}
MEDIA_FIELDS = {
    "images": "image",
    "image": "image",
    "audios": "audio",
    "audio": "audio",
    "videos": "video",
    "video": "video",
}
IMAGE_PLACEHOLDER = "<image>"
# message keys read here; any other key is kept on the message as it came (the chat template may use it)
MESSAGE_KEYS = {"role", "content", "tool_calls", "function_call", "tool_call_id", "name", "weight", "loss_weight"}


def message_text(message: dict[str, Any], index: int) -> str:
    """The text of a message: a string, or content parts with their text under ``text`` (OpenAI) or ``value``.
    Media parts are refused (the models trained here read text), naming the medium."""
    content = message.get("content")
    if content is None:
        return ""
    if isinstance(content, str):
        _check_placeholders(content)
        return content
    if isinstance(content, list):
        parts = []
        for number, part in enumerate(content):
            if isinstance(part, str):
                parts.append(part)
                continue
            if not isinstance(part, dict):
                raise Invalid("wrong_type", field=f"messages[{index}].content[{number}]", expected="a text part")
            kind = part.get("type")
            if kind in MEDIA_PARTS or any(key in MEDIA_PARTS for key in part):
                found = MEDIA_PARTS.get(str(kind)) or _first_media(part)
                raise Invalid("media", found=found, where=f"messages[{index}]")
            text = part.get("text", part.get("value"))
            if kind not in (None, "text", "input_text", "output_text") or not isinstance(text, str):
                raise Invalid(
                    "bad_content_part",
                    field=f"messages[{index}].content[{number}]",
                    keys=", ".join(sorted(str(k) for k in part)[:8]) or "none",
                )
            _check_placeholders(text)
            parts.append(text)
        return "".join(parts)
    raise Invalid("wrong_type", field=f"messages[{index}].content", expected="text")


def _first_media(part: dict[str, Any]) -> str:
    return next(MEDIA_PARTS[key] for key in part if key in MEDIA_PARTS)


def _check_placeholders(text: str) -> None:
    if IMAGE_PLACEHOLDER in text:
        raise Invalid("media", found="image", where=IMAGE_PLACEHOLDER)


def media_in_record(record: dict[str, Any]) -> None:
    """Records that carry images, audio or video (LLaVA / LLaMA-Factory style fields) are refused whole."""
    found = [MEDIA_FIELDS[key] for key in record if key in MEDIA_FIELDS and record[key] not in (None, "", [])]
    if found:
        where = ", ".join(k for k in record if k in MEDIA_FIELDS)
        raise Invalid("media", found=", ".join(dict.fromkeys(found)), where=where)


def _weight(message: dict[str, Any], index: int, role: str) -> int | None:
    """OpenAI's per-message ``weight`` (or another tool's ``loss_weight``): 0 skips the turn in training."""
    key = "weight" if "weight" in message else "loss_weight" if "loss_weight" in message else None
    if key is None or message[key] is None:
        return None
    value = message[key]
    if isinstance(value, bool) or not isinstance(value, int | float) or value not in (0, 1):
        raise Invalid("wrong_type", field=f"messages[{index}].{key}", expected="0 or 1")
    if role != "assistant":
        raise Invalid("weight_not_assistant", field=f"messages[{index}].{key}", role=role)
    return int(value)


def tool_calls_of(message: dict[str, Any], index: int) -> list[dict[str, Any]]:
    """Tool calls in one shape whatever shape they came in: ``tool_calls`` or the legacy ``function_call``,
    each ``{"id"?, "type": "function", "function": {"name", "arguments": object}}`` (arguments sent as a JSON
    string, as OpenAI does, are parsed; chat templates read them as an object)."""
    raw = message.get("tool_calls")
    if raw is None and message.get("function_call") is not None:
        raw = [{"type": "function", "function": message["function_call"]}]
    if raw is None or raw == []:
        return []
    if not isinstance(raw, list):
        raise Invalid("wrong_type", field=f"messages[{index}].tool_calls", expected="a list of tool calls")
    calls = []
    for number, call in enumerate(raw):
        field = f"messages[{index}].tool_calls[{number}]"
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise Invalid("wrong_type", field=field, expected='{"type": "function", "function": {"name", "arguments"}}')
        arguments = function.get("arguments", {})
        if isinstance(arguments, str):
            try:
                arguments = json.loads(arguments) if arguments.strip() else {}
            except ValueError as exc:
                raise Invalid("wrong_type", field=f"{field}.function.arguments", expected="a JSON object") from exc
        if not isinstance(arguments, dict):
            raise Invalid("wrong_type", field=f"{field}.function.arguments", expected="a JSON object")
        clean: dict[str, Any] = {"type": "function", "function": {"name": function["name"], "arguments": arguments}}
        if call.get("id") is not None:
            clean["id"] = str(call["id"])
        calls.append(clean)
    return calls


def check_conversation(
    messages: Any,
    *,
    field: str = "messages",
    need_assistant: bool = True,
    end_with_assistant: bool = False,
    check_order: bool = True,
) -> list[Message]:
    """Validate roles, content and turn order; returns clean messages (keys it does not read kept as they are)."""
    if not isinstance(messages, list) or not messages:
        raise Invalid("wrong_type", field=field, expected="a non-empty list of messages")
    clean: list[Message] = []
    for index, message in enumerate(messages, start=1):
        if not isinstance(message, dict):
            raise Invalid("wrong_type", field=f"{field}[{index - 1}]", expected="an object with role and content")
        role = message.get("role")
        if role == "function":  # OpenAI's legacy function result: a tool message with the function's name
            role = "tool"
        elif role == "developer":
            role = "system"
        if role not in CHAT_ROLES:
            raise Invalid("unknown_role", index=index, role=str(role)[:30], allowed=", ".join(CHAT_ROLES))
        content = message_text(message, index - 1)
        tool_calls = tool_calls_of(message, index - 1) if role == "assistant" else []
        if not content.strip() and not tool_calls:
            raise Invalid("empty_content", index=index, role=role)
        item: Message = {k: v for k, v in message.items() if k not in MESSAGE_KEYS}
        item["role"] = role
        item["content"] = content
        if tool_calls:
            item["tool_calls"] = tool_calls
        for key in ("tool_call_id", "name"):
            if message.get(key) is not None:
                if not isinstance(message[key], str):
                    raise Invalid("wrong_type", field=f"{field}[{index - 1}].{key}", expected="text")
                item[key] = message[key]
        weight = _weight(message, index - 1, role)
        if weight is not None:
            item["weight"] = weight
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
            message["tool_calls"] = tool_calls_of({"function_call": _function_call(value)}, index - 1)
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
