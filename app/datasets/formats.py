"""Record formats: detect which one a file uses and turn each record into canonical form.

Canonical records (``kind`` + ``data``):
  chat        {"messages": [{"role", "content", ("tool_calls"), ("tool_call_id"), ("name"), ("weight")}],
               ("tools"), ("parallel_tool_calls")}
  preference  {"prompt": [messages], "chosen": [assistant messages], "rejected": [assistant messages], ("tools")}
  kto         {"messages": [... ending with the assistant answer], "label": bool}
  prompt      {"messages": [... ending with the user turn to answer], ("tools")}: reinforcement prompts
  text        {"text": str}

Any of these may carry ``extra``: the source record's fields that its format does not read (an id, a category,
the reference answers a grader reads), kept whole so that nothing in an upload is silently dropped.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from app.core.i18n import N_
from app.datasets.conversation import (
    Invalid,
    Message,
    assistant_messages,
    check_conversation,
    media_in_record,
    parse_transcript,
    sharegpt_messages,
)

# code -> display name (marked for translation; translated where it is shown)
FORMATS: dict[str, str] = {
    "openai_chat": N_("OpenAI chat (messages)"),
    "openai_preference": N_("OpenAI preference (input / preferred_output / non_preferred_output)"),
    "openai_reinforcement": N_("OpenAI reinforcement (messages to answer, fields for graders)"),
    "alpaca": N_("Alpaca (instruction / input / output)"),
    "sharegpt": N_("ShareGPT (conversations)"),
    "prompt_completion": N_("prompt / completion"),
    "preference": N_("preference pairs (prompt / chosen / rejected)"),
    "sharegpt_preference": N_("ShareGPT preference (conversations + chosen / rejected)"),
    "hh_rlhf": N_("HH-RLHF transcripts (chosen / rejected)"),
    "ranked": N_("ranked responses (context + responses)"),
    "kto": N_("KTO (messages + label)"),
    "text": N_("raw text"),
}
FORMAT_KIND = {
    "openai_chat": "chat",
    "openai_preference": "preference",
    "openai_reinforcement": "prompt",
    "alpaca": "chat",
    "sharegpt": "chat",
    "prompt_completion": "chat",
    "preference": "preference",
    "sharegpt_preference": "preference",
    "hh_rlhf": "preference",
    "ranked": "preference",
    "kto": "kto",
    "text": "text",
}


@dataclass(frozen=True)
class Canonical:
    kind: str
    data: dict[str, Any]


def detect(sample: Iterable[Any]) -> str | None:
    votes = Counter(fmt for fmt in (detect_one(v) for v in sample) if fmt)
    return votes.most_common(1)[0][0] if votes else None


def detect_one(value: Any) -> str | None:
    if isinstance(value, str):
        return "text"
    if not isinstance(value, dict):
        return None
    keys = set(value)
    if "messages" in keys and "label" in keys:
        return "kto"
    if "messages" in keys:
        messages = value["messages"]
        if (
            isinstance(messages, list)
            and messages
            and not any(isinstance(m, dict) and m.get("role") == "assistant" for m in messages)
        ):
            return "openai_reinforcement"  # no answer to learn: prompts for graders to score the model's answers
        return "openai_chat"
    if "preferred_output" in keys or "non_preferred_output" in keys:
        return "openai_preference"
    if "conversations" in keys and {"chosen", "rejected"} <= keys:
        return "sharegpt_preference"
    if "conversations" in keys:
        return "sharegpt"
    if "instruction" in keys and ("output" in keys or "instances" in keys):
        return "alpaca"
    if {"chosen", "rejected"} <= keys:
        if "prompt" not in keys and isinstance(value.get("chosen"), str) and "Human:" in value["chosen"]:
            return "hh_rlhf"
        return "preference"
    if "context" in keys and "responses" in keys:
        return "ranked"
    if "prompt" in keys and "completion" in keys:
        return "prompt_completion"
    if "text" in keys:
        return "text"
    return None


# --- field helpers ---------------------------------------------------------------------------------


def _field(record: dict[str, Any], name: str) -> Any:
    if name not in record or record[name] is None:
        raise Invalid("missing_field", field=name)
    return record[name]


def _text(record: dict[str, Any], name: str, *, required: bool = True) -> str:
    if not required and record.get(name) in (None, ""):
        return ""
    value = _field(record, name)
    if not isinstance(value, str):
        raise Invalid("wrong_type", field=name, expected="text")
    return value


# --- one function per format ----------------------------------------------------------------------


def _tools(record: dict[str, Any]) -> dict[str, Any]:
    """``tools`` (or the legacy ``functions``, as tools) and ``parallel_tool_calls``, as given."""
    out: dict[str, Any] = {}
    tools = record.get("tools")
    if isinstance(tools, str):
        tools = _maybe_json(tools)
    if tools is None and record.get("functions") is not None:
        functions = record["functions"]
        if not isinstance(functions, list):
            raise Invalid("wrong_type", field="functions", expected="a list of function definitions")
        tools = [{"type": "function", "function": f} for f in functions]
    if tools not in (None, []):
        if not isinstance(tools, list) or not all(isinstance(t, dict) for t in tools):
            raise Invalid("wrong_type", field="tools", expected="a list of tool definitions")
        out["tools"] = tools
    if record.get("parallel_tool_calls") is not None:
        if not isinstance(record["parallel_tool_calls"], bool):
            raise Invalid("wrong_type", field="parallel_tool_calls", expected="true or false")
        out["parallel_tool_calls"] = record["parallel_tool_calls"]
    return out


def _openai_chat(record: dict[str, Any]) -> list[Canonical]:
    data: dict[str, Any] = {"messages": check_conversation(_field(record, "messages"))}
    return [Canonical("chat", data | _tools(record))]


def _openai_reinforcement(record: dict[str, Any]) -> list[Canonical]:
    """OpenAI's reinforcement lines: the conversation the model answers; the other fields (reference answers
    and the like) stay under ``extra`` for the graders."""
    messages = check_conversation(_field(record, "messages"), need_assistant=False)
    if messages[-1]["role"] not in ("user", "tool"):
        raise Invalid(
            "roles_out_of_order",
            index=len(messages),
            role=messages[-1]["role"],
            previous=messages[-1]["role"],
            expected="user",
        )
    return [Canonical("prompt", {"messages": messages} | _tools(record))]


def _openai_preference(record: dict[str, Any]) -> list[Canonical]:
    """OpenAI's DPO lines: ``input`` {messages, tools?}, ``preferred_output`` and ``non_preferred_output`` (each a
    list holding the assistant's answer)."""
    given = _field(record, "input")
    given = _maybe_json(given) if isinstance(given, str) else given  # a CSV or Parquet cell
    if not isinstance(given, dict):
        raise Invalid("wrong_type", field="input", expected="an object with messages")
    prompt = check_conversation(_field(given, "messages"), field="input.messages", need_assistant=False)
    answers = [_field(record, name) for name in ("preferred_output", "non_preferred_output")]
    answers = [_maybe_json(a) if isinstance(a, str) and a[:1] == "[" else a for a in answers]
    pair = _pair(
        prompt,
        assistant_messages(answers[0], "preferred_output"),
        assistant_messages(answers[1], "non_preferred_output"),
    )
    extra = {k: v for k, v in given.items() if k not in ("messages", "tools", "parallel_tool_calls")}
    data = pair.data | _tools(given)
    if extra:
        data["input_extra"] = extra
    return [Canonical("preference", data)]


def _alpaca(record: dict[str, Any]) -> list[Canonical]:
    instruction = _text(record, "instruction")
    messages: list[Message] = []
    system = _text(record, "system", required=False)
    if system:
        messages.append({"role": "system", "content": system})
    history = record.get("history") or []
    if not isinstance(history, list):
        raise Invalid("wrong_type", field="history", expected="a list of [question, answer] pairs")
    for pair in history:
        if not (isinstance(pair, list) and len(pair) == 2 and all(isinstance(x, str) for x in pair)):
            raise Invalid("wrong_type", field="history", expected="a list of [question, answer] pairs")
        messages += [{"role": "user", "content": pair[0]}, {"role": "assistant", "content": pair[1]}]
    if "instances" in record and "output" not in record:  # Self-Instruct seed tasks
        instances = record["instances"]
        if not isinstance(instances, list) or not instances:
            raise Invalid("wrong_type", field="instances", expected="a non-empty list of {input, output}")
        for number, instance in enumerate(instances):
            if not isinstance(instance, dict):
                raise Invalid("wrong_type", field=f"instances[{number}]", expected="an object")
            given = _text(instance, "input", required=False)
            prompt = instruction if number == 0 else given or instruction
            if number == 0 and given:
                prompt = f"{instruction}\n\n{given}"
            messages += [
                {"role": "user", "content": prompt},
                {"role": "assistant", "content": _text(instance, "output")},
            ]
    else:
        given = _text(record, "input", required=False)
        messages += [
            {"role": "user", "content": f"{instruction}\n\n{given}" if given else instruction},
            {"role": "assistant", "content": _text(record, "output")},
        ]
    return [Canonical("chat", {"messages": check_conversation(messages)})]


def _sharegpt(record: dict[str, Any]) -> list[Canonical]:
    messages = sharegpt_messages(_field(record, "conversations"))
    system = _text(record, "system", required=False)
    if system and messages[0]["role"] != "system":
        messages.insert(0, {"role": "system", "content": system})
    return [Canonical("chat", {"messages": check_conversation(messages)} | _tools(record))]


def _maybe_json(value: str) -> Any:
    try:
        return json.loads(value)
    except ValueError:
        return value


def _prompt_completion(record: dict[str, Any]) -> list[Canonical]:
    messages = [
        {"role": "user", "content": _text(record, "prompt")},
        {"role": "assistant", "content": _text(record, "completion")},
    ]
    return [Canonical("chat", {"messages": check_conversation(messages)})]


def _prompt_messages(value: Any, field: str) -> list[Message]:
    if isinstance(value, str):
        if not value.strip():
            raise Invalid("empty_content", index=1, role="user")
        return [{"role": "user", "content": value}]
    return check_conversation(value, field=field, need_assistant=False)


def _pair(prompt: list[Message], chosen: list[Message], rejected: list[Message]) -> Canonical:
    if prompt[-1]["role"] not in ("user", "tool"):
        raise Invalid(
            "roles_out_of_order",
            index=len(prompt),
            role=prompt[-1]["role"],
            previous=prompt[-1]["role"],
            expected="user",
        )
    return Canonical("preference", {"prompt": prompt, "chosen": chosen, "rejected": rejected})


def _split_implicit_prompt(chosen: list[Any], rejected: list[Any]) -> tuple[list[Any], list[Any], list[Any]]:
    shared = 0
    while shared < min(len(chosen), len(rejected)) - 1 and chosen[shared] == rejected[shared]:
        shared += 1
    return chosen[:shared], chosen[shared:], rejected[shared:]


def _preference(record: dict[str, Any]) -> list[Canonical]:
    chosen_raw, rejected_raw = _field(record, "chosen"), _field(record, "rejected")
    if "prompt" in record:
        prompt = _prompt_messages(record["prompt"], "prompt")
        if isinstance(chosen_raw, list) and chosen_raw[: len(prompt)] == prompt:
            chosen_raw, rejected_raw = chosen_raw[len(prompt) :], rejected_raw[len(prompt) :]
    elif isinstance(chosen_raw, list) and isinstance(rejected_raw, list):
        prompt_raw, chosen_raw, rejected_raw = _split_implicit_prompt(chosen_raw, rejected_raw)
        if not prompt_raw:
            raise Invalid("missing_field", field="prompt")
        prompt = _prompt_messages(prompt_raw, "prompt")
    else:
        raise Invalid("missing_field", field="prompt")
    return [_pair(prompt, assistant_messages(chosen_raw, "chosen"), assistant_messages(rejected_raw, "rejected"))]


def _sharegpt_preference(record: dict[str, Any]) -> list[Canonical]:
    prompt = check_conversation(
        sharegpt_messages(_field(record, "conversations")), field="conversations", need_assistant=False
    )
    chosen = _field(record, "chosen")
    rejected = _field(record, "rejected")
    return [_pair(prompt, _sharegpt_answer(chosen, "chosen"), _sharegpt_answer(rejected, "rejected"))]


def _sharegpt_answer(value: Any, field: str) -> list[Message]:
    """A ShareGPT preference answer is a {from, value} turn or plain text."""
    if isinstance(value, dict):
        return assistant_messages(sharegpt_messages([value], field)[0]["content"], field)
    return assistant_messages(value, field)


def _hh_rlhf(record: dict[str, Any]) -> list[Canonical]:
    chosen = parse_transcript(_text(record, "chosen"), "chosen")
    rejected = parse_transcript(_text(record, "rejected"), "rejected")
    if chosen[-1]["role"] != "assistant" or rejected[-1]["role"] != "assistant":
        raise Invalid("no_assistant_turn")
    prompt = check_conversation(chosen[:-1], field="chosen", need_assistant=False)
    return [
        _pair(
            prompt,
            assistant_messages(chosen[-1]["content"], "chosen"),
            assistant_messages(rejected[-1]["content"], "rejected"),
        )
    ]


def _ranked(record: dict[str, Any]) -> list[Canonical]:
    prompt = _prompt_messages(_field(record, "context"), "context")
    responses = _field(record, "responses")
    if not isinstance(responses, list):
        raise Invalid("wrong_type", field="responses", expected="a list of {text, rank}")
    ranked: list[tuple[float, str]] = []
    for index, response in enumerate(responses):
        if (
            not isinstance(response, dict)
            or not isinstance(response.get("text"), str)
            or not isinstance(response.get("rank"), int | float)
            or isinstance(response.get("rank"), bool)
        ):
            raise Invalid("wrong_type", field=f"responses[{index}]", expected="{text, rank} with a numeric rank")
        ranked.append((float(response["rank"]), response["text"]))
    ranked.sort(key=lambda pair: pair[0])  # rank 1 is best
    pairs = [
        _pair(prompt, assistant_messages(better, "responses"), assistant_messages(worse, "responses"))
        for i, (rank_a, better) in enumerate(ranked)
        for rank_b, worse in ranked[i + 1 :]
        if rank_a < rank_b
    ]
    if not pairs:
        raise Invalid("no_pairs")
    return pairs


def _kto(record: dict[str, Any]) -> list[Canonical]:
    label = _field(record, "label")
    if isinstance(label, str) and label.strip().lower() in ("true", "false"):  # CSV and Parquet cells
        label = label.strip().lower() == "true"
    if not isinstance(label, bool):
        raise Invalid("wrong_type", field="label", expected="true or false")
    messages = check_conversation(_field(record, "messages"), end_with_assistant=True)
    return [Canonical("kto", {"messages": messages, "label": label})]


def _text_record(record: Any) -> list[Canonical]:
    text = record if isinstance(record, str) else _text(record, "text")
    if not text.strip():
        raise Invalid("empty_text")
    return [Canonical("text", {"text": text})]


CONVERTERS: dict[str, Callable[[Any], list[Canonical]]] = {
    "openai_chat": _openai_chat,
    "openai_preference": _openai_preference,
    "openai_reinforcement": _openai_reinforcement,
    "alpaca": _alpaca,
    "sharegpt": _sharegpt,
    "prompt_completion": _prompt_completion,
    "preference": _preference,
    "sharegpt_preference": _sharegpt_preference,
    "hh_rlhf": _hh_rlhf,
    "ranked": _ranked,
    "kto": _kto,
    "text": _text_record,
}


def canonicalize(value: Any, fmt: str, mapping: dict[str, str] | None = None) -> list[Canonical]:
    """One source record into canonical records (ranked responses give several); raises Invalid."""
    if not isinstance(value, dict) and not (fmt == "text" and isinstance(value, str)):
        raise Invalid("not_an_object")
    if mapping and isinstance(value, dict):
        value = {target: value.get(source) for target, source in mapping.items() if source} | {
            k: v for k, v in value.items() if k not in mapping.values()
        }
        value = {k: _maybe_json(v) if isinstance(v, str) and k in JSON_FIELDS else v for k, v in value.items()}
    elif isinstance(value, dict):
        value = {
            k: _maybe_json(v) if isinstance(v, str) and k in JSON_FIELDS and v[:1] in "[{" else v
            for k, v in value.items()
        }
    if isinstance(value, dict):
        media_in_record(value)
    records = CONVERTERS[fmt](value)
    extra = (
        {k: v for k, v in value.items() if k not in READ_FIELDS[fmt] and v is not None}
        if isinstance(value, dict)
        else {}
    )
    if extra:
        records = [Canonical(r.kind, r.data | {"extra": extra}) for r in records]
    return records


# CSV and Parquet cells are strings; these fields hold JSON structures when they come from such files.
JSON_FIELDS = {
    "messages",
    "conversations",
    "history",
    "tools",
    "functions",
    "responses",
    "instances",
}
# the fields each format reads; a record's other fields are kept under "extra"
_TOOLS = {"tools", "functions", "parallel_tool_calls"}
READ_FIELDS: dict[str, set[str]] = {
    "openai_chat": {"messages"} | _TOOLS,
    "openai_preference": {"input", "preferred_output", "non_preferred_output"},
    "openai_reinforcement": {"messages"} | _TOOLS,
    "alpaca": {"instruction", "input", "output", "system", "history", "instances"},
    "sharegpt": {"conversations", "system"} | _TOOLS,
    "prompt_completion": {"prompt", "completion"},
    "preference": {"prompt", "chosen", "rejected"},
    "sharegpt_preference": {"conversations", "chosen", "rejected"},
    "hh_rlhf": {"chosen", "rejected"},
    "ranked": {"context", "responses"},
    "kto": {"messages", "label"},
    "text": {"text"},
}
