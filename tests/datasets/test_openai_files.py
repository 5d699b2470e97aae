"""OpenAI's training files mean what they mean on OpenAI, and nothing in an upload is silently changed or
dropped: weighted turns, tool calls (new and legacy shapes), DPO and reinforcement lines, media, content parts,
plain-text splitting and CSV columns. The example lines follow the shapes of OpenAI's fine-tuning guide."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from app.datasets.reading import detect_text_split, read_bytes, read_items, sniff_file_type
from app.datasets.template import renderer_for
from app.datasets.validation import Report, validate_bytes, validate_items


def _lines(*rows: Any) -> bytes:
    return b"".join(json.dumps(r, ensure_ascii=False).encode() + b"\n" for r in rows)


def _only(data: bytes) -> dict[str, Any]:
    report = validate_bytes(data)
    assert report.invalid_lines == 0, [(i.line, i.message) for i in report.issues]
    accepted = list(validate_items(read_bytes(data, "jsonl"), Report("jsonl")))
    return accepted[0].records[0].data


SUPERVISED = {
    "messages": [
        {"role": "system", "content": "Marv is a factual chatbot that is also sarcastic."},
        {"role": "user", "content": "What's the capital of France?"},
        {"role": "assistant", "content": "Paris, as if everyone doesn't know that already."},
    ]
}
WEIGHTED = {
    "messages": [
        {"role": "system", "content": "Marv is a factual chatbot that is also sarcastic."},
        {"role": "user", "content": "What's the capital of France?"},
        {"role": "assistant", "content": "Paris", "weight": 0},
        {"role": "user", "content": "Can you be more sarcastic?"},
        {"role": "assistant", "content": "Paris, as if everyone doesn't know that already.", "weight": 1},
    ]
}
TOOLS = {
    "messages": [
        {"role": "user", "content": "What is the weather in San Francisco?"},
        {
            "role": "assistant",
            "tool_calls": [
                {
                    "id": "call_id",
                    "type": "function",
                    "function": {"name": "get_current_weather", "arguments": '{"location": "San Francisco, USA"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_id", "content": "21.0"},
        {"role": "assistant", "content": "It is 21 degrees celsius in San Francisco, CA"},
    ],
    "tools": [
        {
            "type": "function",
            "function": {
                "name": "get_current_weather",
                "description": "Get the current weather",
                "parameters": {
                    "type": "object",
                    "properties": {"location": {"type": "string"}},
                    "required": ["location"],
                },
            },
        }
    ],
    "parallel_tool_calls": False,
}
LEGACY_FUNCTIONS = {
    "messages": [
        {"role": "user", "content": "What is the weather in San Francisco?"},
        {
            "role": "assistant",
            "function_call": {"name": "get_current_weather", "arguments": '{"location": "San Francisco, USA"}'},
        },
        {"role": "function", "name": "get_current_weather", "content": "21.0"},
        {"role": "assistant", "content": "It is 21 degrees celsius in San Francisco, CA"},
    ],
    "functions": [{"name": "get_current_weather", "parameters": {"type": "object", "properties": {}}}],
}
DPO = {
    "input": {
        "messages": [{"role": "user", "content": "Hello, can you tell me how cold San Francisco is today?"}],
        "tools": [],
        "parallel_tool_calls": True,
    },
    "preferred_output": [{"role": "assistant", "content": "Today in San Francisco, it is not quite cold as expected."}],
    "non_preferred_output": [{"role": "assistant", "content": "It is not particularly cold in San Francisco today."}],
}
REINFORCEMENT = {
    "messages": [{"role": "user", "content": "Extract the total from: 'Total due: $42.10'"}],
    "reference_answer": {"total": 42.10},
    "difficulty": "easy",
}


def test_supervised_and_weighted_lines_keep_the_weight_of_each_assistant_turn() -> None:
    assert _only(_lines(SUPERVISED))["messages"][2] == SUPERVISED["messages"][2]
    messages = _only(_lines(WEIGHTED))["messages"]
    assert [m.get("weight") for m in messages] == [None, None, 0, None, 1]


def test_weight_zero_turns_are_context_only_in_the_trained_token_view(smollm2_tokenizer_dir: Path) -> None:
    renderer = renderer_for(smollm2_tokenizer_dir, (smollm2_tokenizer_dir / "chat_template.jinja").read_text())
    assert renderer is not None
    messages = _only(_lines(WEIGHTED))["messages"]
    text, spans = renderer.trained_spans(messages)
    assert [text[a:b] for a, b in spans] == ["Paris, as if everyone doesn't know that already.<|im_end|>"]
    unweighted = [{k: v for k, v in m.items() if k != "weight"} for m in messages]
    _text, both = renderer.trained_spans(unweighted)
    assert len(both) == 2  # without the weights both answers train


def test_tool_calls_and_legacy_functions_are_kept_in_one_shape() -> None:
    data = _only(_lines(TOOLS))
    call = data["messages"][1]["tool_calls"][0]
    assert call == {
        "id": "call_id",
        "type": "function",
        "function": {"name": "get_current_weather", "arguments": {"location": "San Francisco, USA"}},
    }
    assert data["messages"][2] == {"role": "tool", "content": "21.0", "tool_call_id": "call_id"}
    assert data["tools"] == TOOLS["tools"] and data["parallel_tool_calls"] is False

    legacy = _only(_lines(LEGACY_FUNCTIONS))
    assert legacy["messages"][1]["tool_calls"] == [
        {
            "type": "function",
            "function": {"name": "get_current_weather", "arguments": {"location": "San Francisco, USA"}},
        }
    ]
    assert legacy["messages"][2] == {"role": "tool", "content": "21.0", "name": "get_current_weather"}
    assert legacy["tools"] == [{"type": "function", "function": LEGACY_FUNCTIONS["functions"][0]}]


def test_tools_reach_the_chat_template(smollm2_tokenizer_dir: Path) -> None:
    renderer = renderer_for(
        smollm2_tokenizer_dir,
        "{% if tools %}TOOLS:{% for t in tools %}{{ t.function.name }} {% endfor %}{% endif %}"
        "{% for m in messages %}<{{ m.role }}>{{ m.content }}"
        "{% for c in m.tool_calls or [] %}{{ c.function.name }}({{ c.function.arguments.location }}){% endfor %}"
        "{% endfor %}",
    )
    assert renderer is not None
    data = _only(_lines(TOOLS))
    text = renderer.render(data["messages"], tools=data["tools"])
    assert text.startswith("TOOLS:get_current_weather ") and "get_current_weather(San Francisco, USA)" in text


def test_openai_dpo_lines_become_preference_pairs() -> None:
    report = validate_bytes(_lines(DPO, DPO))
    assert report.record_format == "openai_preference" and report.valid_lines == 2
    data = _only(_lines(DPO))
    assert data["prompt"] == DPO["input"]["messages"]
    assert data["chosen"] == DPO["preferred_output"] and data["rejected"] == DPO["non_preferred_output"]
    assert data["parallel_tool_calls"] is True


def test_reinforcement_lines_keep_their_extra_fields_for_graders() -> None:
    report = validate_bytes(_lines(REINFORCEMENT))
    assert report.record_format == "openai_reinforcement" and dict(report.kinds) == {"prompt": 1}
    data = _only(_lines(REINFORCEMENT))
    assert data["extra"] == {"reference_answer": {"total": 42.10}, "difficulty": "easy"}
    # any format keeps the fields it does not read (here an alpaca id and category)
    alpaca = _only(_lines({"instruction": "Add", "input": "1+1", "output": "2", "id": 7, "category": "math"}))
    assert alpaca["extra"] == {"id": 7, "category": "math"}


@pytest.mark.parametrize(
    ("record", "found"),
    [
        ({"messages": SUPERVISED["messages"], "images": ["cat.png"]}, "image"),
        ({"conversations": [{"from": "human", "value": "<video>Hi"}], "videos": ["a.mp4"]}, "video"),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "text", "text": "What is in this picture?"},
                            {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
                        ],
                    },
                    {"role": "assistant", "content": "A cat."},
                ]
            },
            "image",
        ),
        (
            {
                "messages": [
                    {"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": "AAAA"}}]},
                    {"role": "assistant", "content": "Hello."},
                ]
            },
            "audio",
        ),
        ({"instruction": "<image>Describe the picture.", "output": "A cat."}, "image"),
    ],
)
def test_media_is_refused_with_a_message_that_names_it(record: dict[str, Any], found: str) -> None:
    report = validate_bytes(_lines(record))
    assert report.valid_lines == 0 and [i.code for i in report.issues] == ["media"]
    message = report.issues[0].message
    assert found in message and "text only" in message


def test_html_about_media_tags_is_not_media() -> None:
    answer = "Use the <video> tag with controls, or <img src=...> for a picture."
    messages = [{"role": "user", "content": "Embed a video?"}, {"role": "assistant", "content": answer}]
    data = _only(_lines({"messages": messages}))
    assert data["messages"][1]["content"] == answer


def test_value_keyed_parts_and_loss_weight_are_read() -> None:
    record = {
        "messages": [
            {"role": "user", "content": [{"type": "text", "value": "Hi"}]},
            {"role": "assistant", "content": [{"type": "text", "value": "Hello"}], "loss_weight": 0.0},
            {"role": "user", "content": "Again?"},
            {"role": "assistant", "content": "Hello again", "loss_weight": 1},
        ]
    }
    messages = _only(_lines(record))["messages"]
    assert [m["content"] for m in messages] == ["Hi", "Hello", "Again?", "Hello again"]
    assert [m.get("weight") for m in messages] == [None, 0, None, 1]


def test_bad_parts_and_weights_say_what_is_wrong() -> None:
    odd_part = {
        "messages": [
            {"role": "user", "content": [{"type": "text", "body": "Hi"}]},
            {"role": "assistant", "content": "Hello"},
        ]
    }
    on_user = {"messages": [{"role": "user", "content": "Hi", "weight": 0}, {"role": "assistant", "content": "Hello"}]}
    half = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello", "weight": 0.5}]}
    bad_args = {
        "messages": [
            {"role": "user", "content": "Hi"},
            {
                "role": "assistant",
                "tool_calls": [{"type": "function", "function": {"name": "f", "arguments": "{oops"}}],
            },
        ]
    }
    report = validate_bytes(_lines(odd_part, on_user, half, bad_args))
    messages = {i.line: (i.code, i.message) for i in report.issues}
    assert messages[1][0] == "bad_content_part" and '"body"' not in messages[1][1] and "body, type" in messages[1][1]
    assert '{"type": "text", "text": "…"}' in messages[1][1]
    assert messages[2][0] == "weight_not_assistant" and "messages[0].weight" in messages[2][1]
    assert messages[3][0] == "wrong_type" and "0 or 1" in messages[3][1]
    assert messages[4][0] == "wrong_type" and "arguments" in messages[4][1] and "JSON object" in messages[4][1]


def _text_records(path: Path, split: str | None = None) -> list[tuple[int, str]]:
    report = Report(file_type="text")
    accepted = validate_items(read_items(path, "text", text_split=split or detect_text_split(path, path.name)), report)
    return [(a.line, a.records[0].data["text"]) for a in accepted]


def test_plain_text_one_document_per_line_or_split_at_blank_lines(tmp_path: Path) -> None:
    lines = tmp_path / "docs.txt"
    lines.write_text("First document.\nSecond document.\nThird document.\n")
    assert detect_text_split(lines, lines.name) == "lines"
    assert _text_records(lines) == [(1, "First document."), (2, "Second document."), (3, "Third document.")]

    paragraphs = tmp_path / "paragraphs.txt"
    paragraphs.write_text("One paragraph\nover two lines.\n\nAnother one.\n\n\nA third.\n")
    assert sniff_file_type(paragraphs, paragraphs.name) == "text"
    assert detect_text_split(paragraphs, paragraphs.name) == "paragraphs"
    assert _text_records(paragraphs) == [(1, "One paragraph\nover two lines."), (4, "Another one."), (7, "A third.")]
    # the choice can be changed: the same file one record per line
    assert [line for line, _t in _text_records(paragraphs, "lines")] == [1, 2, 4, 7]

    markdown = tmp_path / "notes.md"
    markdown.write_text("# Title\n\nFirst paragraph.\n\nSecond one.\n")
    assert detect_text_split(markdown, markdown.name) == "document"
    assert len(_text_records(markdown)) == 1


def test_csv_columns_with_common_names_are_mapped_and_unknown_ones_say_how(tmp_path: Path) -> None:
    qa = tmp_path / "qa.csv"
    qa.write_text('Question,Answer,source\n"What is 2+2?","4",quiz\n')
    report = Report(file_type="csv")
    accepted = list(validate_items(read_items(qa, "csv"), report))
    assert report.record_format == "prompt_completion" and report.mapping_auto
    assert report.column_mapping == {"prompt": "Question", "completion": "Answer"}
    data = accepted[0].records[0].data
    assert data["messages"][1]["content"] == "4" and data["extra"] == {"source": "quiz"}

    odd = tmp_path / "odd.csv"
    odd.write_text("left,right\na,b\n")
    report = Report(file_type="csv")
    list(validate_items(read_items(odd, "csv"), report))
    assert report.issues[0].code == "unknown_columns"
    message = report.issues[0].message
    assert "left, right" in message and "column_mapping" in message and "Format, columns" in message
