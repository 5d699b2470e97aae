"""Every accepted format imports into the right canonical records (roles, contents, pairs), not just counts."""

from __future__ import annotations

import gzip
import io
import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from app.datasets.reading import read_items, sniff_file_type
from app.datasets.validation import Report, validate_bytes, validate_items
from tests.conftest import SHARED_DATASETS


def _import(
    path: Path, record_format: str | None = None, mapping: dict[str, str] | None = None
) -> tuple[Report, list[Any]]:
    file_type = sniff_file_type(path, path.name)
    report = Report(file_type=file_type)
    accepted = list(validate_items(read_items(path, file_type), report, record_format=record_format, mapping=mapping))
    return report, [(a.line, r.kind, r.data) for a in accepted for r in a.records]


def _jsonl(tmp_path: Path, name: str, rows: list[Any]) -> Path:
    path = tmp_path / name
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n")
    return path


def _roles(messages: list[dict[str, Any]]) -> list[str]:
    return [m["role"] for m in messages]


def test_alpaca_json_array_from_the_shared_datasets() -> None:
    report, records = _import(SHARED_DATASETS / "alpaca_5000.json")
    source = json.loads((SHARED_DATASETS / "alpaca_5000.json").read_text())
    assert report.record_format == "alpaca" and report.file_type == "json"
    assert report.valid_lines + report.invalid_lines == len(source) == 5000
    assert report.by_code == {"empty_content": 2}  # two real records with an empty output
    line, kind, data = records[0]
    first = source[0]
    expected_user = f"{first['instruction']}\n\n{first['input']}" if first["input"] else first["instruction"]
    assert kind == "chat" and line == 1
    assert data["messages"] == [
        {"role": "user", "content": expected_user},
        {"role": "assistant", "content": first["output"]},
    ]


def test_hh_rlhf_gzip_transcripts_become_preference_pairs() -> None:
    report, records = _import(SHARED_DATASETS / "hh_rlhf_harmless_test.jsonl.gz")
    raw = [
        json.loads(x)
        for x in gzip.decompress((SHARED_DATASETS / "hh_rlhf_harmless_test.jsonl.gz").read_bytes())
        .decode()
        .splitlines()
        if x.strip()
    ]
    assert report.record_format == "hh_rlhf" and report.kinds == {"preference": report.valid_lines}
    assert report.valid_lines + report.invalid_lines == len(raw) == 2312
    line, _kind, data = records[0]
    original = raw[line - 1]
    last_chosen = original["chosen"].rsplit("\n\nAssistant:", 1)[1].strip()
    last_rejected = original["rejected"].rsplit("\n\nAssistant:", 1)[1].strip()
    assert data["chosen"] == [{"role": "assistant", "content": last_chosen}]
    assert data["rejected"] == [{"role": "assistant", "content": last_rejected}]
    assert data["prompt"][0]["role"] == "user" and data["prompt"][-1]["role"] == "user"
    assert original["chosen"].split("\n\nHuman: ", 1)[1].startswith(data["prompt"][0]["content"])


def test_self_instruct_seed_tasks_jsonl() -> None:
    report, records = _import(SHARED_DATASETS / "alpaca_seed_tasks.jsonl")
    first = json.loads((SHARED_DATASETS / "alpaca_seed_tasks.jsonl").read_text().splitlines()[0])
    assert report.record_format == "alpaca" and report.valid_lines == 175 and report.invalid_lines == 0
    messages = records[0][2]["messages"]
    instance = first["instances"][0]
    user = f"{first['instruction']}\n\n{instance['input']}" if instance["input"] else first["instruction"]
    assert messages[:2] == [{"role": "user", "content": user}, {"role": "assistant", "content": instance["output"]}]


def test_openai_chat_with_tools_and_tool_calls(tmp_path: Path) -> None:
    call = [{"id": "c1", "type": "function", "function": {"name": "weather", "arguments": '{"city": "Paris"}'}}]
    rows = [
        {
            "messages": [
                {"role": "system", "content": "You can call tools."},
                {"role": "user", "content": "Weather in Paris?"},
                {"role": "assistant", "content": None, "tool_calls": call},
                {"role": "tool", "content": "18°C, sunny"},
                {"role": "assistant", "content": "It is 18°C and sunny."},
            ],
            "tools": [{"type": "function", "function": {"name": "weather"}}],
        }
    ]
    report, records = _import(_jsonl(tmp_path, "chat.jsonl", rows))
    assert report.record_format == "openai_chat" and report.invalid_lines == 0
    data = records[0][2]
    assert _roles(data["messages"]) == ["system", "user", "assistant", "tool", "assistant"]
    # arguments are stored as an object whatever shape they came in (OpenAI sends a JSON string)
    stored = [{"id": "c1", "type": "function", "function": {"name": "weather", "arguments": {"city": "Paris"}}}]
    assert data["messages"][2]["tool_calls"] == stored and data["tools"][0]["function"]["name"] == "weather"


def test_sharegpt_with_system_function_call_and_observation(tmp_path: Path) -> None:
    rows = [
        {
            "system": "Be brief.",
            "tools": '[{"name": "calc"}]',
            "conversations": [
                {"from": "human", "value": "What is 6*7?"},
                {"from": "function_call", "value": '{"name": "calc", "arguments": {"x": "6*7"}}'},
                {"from": "observation", "value": "42"},
                {"from": "gpt", "value": "42."},
            ],
        }
    ]
    report, records = _import(_jsonl(tmp_path, "sharegpt.jsonl", rows))
    assert report.record_format == "sharegpt" and report.invalid_lines == 0
    messages = records[0][2]["messages"]
    assert _roles(messages) == ["system", "user", "assistant", "tool", "assistant"]
    assert messages[0]["content"] == "Be brief." and messages[2]["tool_calls"][0]["function"]["name"] == "calc"
    assert records[0][2]["tools"] == [{"name": "calc"}]


def test_alpaca_with_system_and_history(tmp_path: Path) -> None:
    rows = [
        {
            "instruction": "And in French?",
            "input": "",
            "output": "Bonjour",
            "system": "Translate.",
            "history": [["Say hello in Spanish", "Hola"]],
        }
    ]
    _report, records = _import(_jsonl(tmp_path, "a.jsonl", rows))
    assert [(m["role"], m["content"]) for m in records[0][2]["messages"]] == [
        ("system", "Translate."),
        ("user", "Say hello in Spanish"),
        ("assistant", "Hola"),
        ("user", "And in French?"),
        ("assistant", "Bonjour"),
    ]


def test_prompt_completion(tmp_path: Path) -> None:
    report, records = _import(_jsonl(tmp_path, "pc.jsonl", [{"prompt": "2+2=", "completion": "4"}]))
    assert report.record_format == "prompt_completion"
    assert records[0][2]["messages"] == [{"role": "user", "content": "2+2="}, {"role": "assistant", "content": "4"}]


def test_preference_pairs_as_strings_and_as_message_lists(tmp_path: Path) -> None:
    rows = [
        {"prompt": "Capital of France?", "chosen": "Paris.", "rejected": "Lyon."},
        {
            "chosen": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}],
            "rejected": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Go away."}],
        },
    ]
    report, records = _import(_jsonl(tmp_path, "pref.jsonl", rows))
    assert report.record_format == "preference" and report.invalid_lines == 0
    assert records[0][2] == {
        "prompt": [{"role": "user", "content": "Capital of France?"}],
        "chosen": [{"role": "assistant", "content": "Paris."}],
        "rejected": [{"role": "assistant", "content": "Lyon."}],
    }
    assert records[1][2]["prompt"] == [{"role": "user", "content": "Hi"}]  # implicit shared prompt
    assert records[1][2]["chosen"][0]["content"] == "Hello!" and records[1][2]["rejected"][0]["content"] == "Go away."


def test_sharegpt_preference(tmp_path: Path) -> None:
    rows = [
        {
            "conversations": [{"from": "human", "value": "Pick a colour"}],
            "chosen": {"from": "gpt", "value": "Blue"},
            "rejected": {"from": "gpt", "value": "No."},
        }
    ]
    report, records = _import(_jsonl(tmp_path, "sp.jsonl", rows))
    assert report.record_format == "sharegpt_preference"
    assert records[0][2]["chosen"] == [{"role": "assistant", "content": "Blue"}]
    assert records[0][2]["rejected"] == [{"role": "assistant", "content": "No."}]


def test_ranked_responses_become_every_ordered_pair(tmp_path: Path) -> None:
    rows = [
        {
            "context": "Name a fruit",
            "responses": [{"text": "Apple", "rank": 1}, {"text": "Rock", "rank": 3}, {"text": "Pear", "rank": 2}],
        }
    ]
    report, records = _import(_jsonl(tmp_path, "ranked.jsonl", rows))
    assert report.record_format == "ranked" and report.records == 3 and report.valid_lines == 1
    pairs = {(r[2]["chosen"][0]["content"], r[2]["rejected"][0]["content"]) for r in records}
    assert pairs == {("Apple", "Pear"), ("Apple", "Rock"), ("Pear", "Rock")}


def test_kto_needs_a_boolean_label(tmp_path: Path) -> None:
    rows = [
        {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}], "label": True},
        {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Bye"}], "label": "yes"},
    ]
    report, records = _import(_jsonl(tmp_path, "kto.jsonl", rows))
    assert report.record_format == "kto" and records[0][1] == "kto" and records[0][2]["label"] is True
    assert [(i.line, i.code) for i in report.issues] == [(2, "wrong_type")]
    assert "label" in report.issues[0].message


def test_raw_text_files_and_text_lines(tmp_path: Path) -> None:
    (tmp_path / "notes.md").write_text("# Title\n\nFirst paragraph.\n\nSecond one.\n")
    report, records = _import(tmp_path / "notes.md")
    assert report.record_format == "text" and records[0][1] == "text"
    assert records[0][2]["text"].startswith("# Title") and "Second one." in records[0][2]["text"]
    _r, lines = _import(_jsonl(tmp_path, "t.jsonl", [{"text": "Domain text."}]))
    assert lines[0][2] == {"text": "Domain text."}


def test_csv_with_a_column_mapping(tmp_path: Path) -> None:
    path = tmp_path / "qa.csv"
    path.write_text('question,answer\n"What is 2+2?","4"\n"Say ""hi""","hi"\n')
    report, records = _import(path, mapping={"prompt": "question", "completion": "answer"})
    assert report.file_type == "csv" and report.record_format == "prompt_completion"
    assert report.columns == ["question", "answer"]
    assert records[1][0] == 3 and records[1][2]["messages"][0]["content"] == 'Say "hi"'


def test_parquet_rows(tmp_path: Path) -> None:
    path = tmp_path / "data.parquet"
    pq.write_table(pa.table({"instruction": ["Add", "Sub"], "input": ["1+1", "3-1"], "output": ["2", "2"]}), path)
    report, records = _import(path)
    assert report.file_type == "parquet" and report.record_format == "alpaca" and report.valid_lines == 2
    assert records[1][0] == 2 and records[1][2]["messages"][0]["content"] == "Sub\n\n3-1"


def test_format_override_wins_over_detection() -> None:
    data = b'{"text": "x", "prompt": "p", "completion": "c"}\n'
    assert validate_bytes(data).record_format == "prompt_completion"
    assert validate_bytes(data, record_format="text").record_format == "text"


def test_gzip_detected_by_magic_bytes(tmp_path: Path) -> None:
    path = tmp_path / "upload.bin"
    buffer = io.BytesIO()
    with gzip.GzipFile(fileobj=buffer, mode="wb") as handle:
        handle.write(b'{"prompt": "a", "completion": "b"}\n')
    path.write_bytes(buffer.getvalue())
    report, records = _import(path)  # no .gz suffix: the magic bytes decide
    assert report.valid_lines == 1 and records[0][2]["messages"][1]["content"] == "b"
