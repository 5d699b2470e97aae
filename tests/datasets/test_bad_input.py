"""RELIABILITY.md's bad-input table: each trap gets its code on the right line; nothing crashes or vanishes."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.datasets.reading import read_items
from app.datasets.validation import Report, validate_bytes, validate_items

GOOD = b'{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}'


def _issues(data: bytes, file_type: str = "jsonl") -> list[tuple[int, str]]:
    return [(i.line, i.code) for i in validate_bytes(data, file_type).issues]


def test_deep_nesting_is_that_lines_error_not_a_crash() -> None:
    report = validate_bytes(GOOD + b"\n" + b"[" * 100_000 + b"\n" + GOOD + b"\n")
    assert [(i.line, i.code) for i in report.issues] == [(2, "json_too_deep")]
    assert report.valid_lines == 2


def test_nan_duplicate_keys_and_lone_surrogates_are_rejected() -> None:
    data = b"\n".join(
        [GOOD, b'{"a": NaN}', b'{"a": Infinity}', b'{"messages": [], "messages": []}', b'{"text": "bad \\ud800 text"}']
    )
    assert _issues(data) == [(2, "json_nan"), (3, "json_nan"), (4, "json_duplicate_key"), (5, "json_lone_surrogate")]


def test_u2028_inside_a_string_does_not_split_the_record() -> None:
    record = {"messages": [{"role": "user", "content": "a\u2028b\u2029c"}, {"role": "assistant", "content": "ok"}]}
    report = validate_bytes(json.dumps(record, ensure_ascii=False).encode() + b"\n")
    assert report.valid_lines == 1 and report.invalid_lines == 0


def test_bom_crlf_and_trailing_blank_lines() -> None:
    data = b"\xef\xbb\xbf" + GOOD + b"\r\n" + GOOD + b"\r\n\r\n\n   \n"
    report = validate_bytes(data)
    assert (report.valid_lines, report.invalid_lines) == (2, 0)


def test_gzip_file(tmp_path: Path) -> None:
    path = tmp_path / "data.jsonl.gz"
    path.write_bytes(gzip.compress(GOOD + b"\n{broken\n"))
    report = Report(file_type="jsonl")
    list(validate_items(read_items(path, "jsonl"), report))
    assert (report.valid_lines, [(i.line, i.code) for i in report.issues]) == (1, [(2, "invalid_json")])


def test_invalid_utf8_line() -> None:
    assert _issues(GOOD + b"\n" + b'{"text": "\xff\xfe"}\n') == [(2, "encoding")]


def test_csv_unterminated_quote_is_reported_not_swallowed() -> None:
    data = b'prompt,completion\n"ok","fine"\n"open quote,x\n"more","rows"\n'
    report = validate_bytes(data, "csv")
    assert report.valid_lines == 1
    assert [i.code for i in report.issues] == ["csv_error"] and report.issues[0].line == 3
    assert "quote" in report.issues[0].message.lower() or "eof" in report.issues[0].message.lower()


def test_csv_huge_field_and_wrong_column_count() -> None:
    big = b"x" * 300_000
    data = b"prompt,completion\n" + big + b",y\n" + b"a,b,c\n"
    report = validate_bytes(data, "csv", record_format="prompt_completion")
    assert report.valid_lines == 1 and [(i.line, i.code) for i in report.issues] == [(3, "csv_columns")]


def test_wrong_shapes_are_reported_with_the_fix() -> None:
    rows = [
        {"messages": [{"role": "user", "content": "only a question"}]},
        {"messages": [{"role": "bot", "content": "x"}, {"role": "assistant", "content": "y"}]},
        {"messages": [{"role": "user", "content": "   "}, {"role": "assistant", "content": "y"}]},
        {
            "messages": [
                {"role": "user", "content": "a"},
                {"role": "user", "content": "b"},
                {"role": "assistant", "content": "c"},
            ]
        },
        {"messages": "not a list"},
        {"messages": [{"role": "user", "content": 5}, {"role": "assistant", "content": "y"}]},
    ]
    report = validate_bytes("\n".join(json.dumps(r) for r in rows).encode())
    assert [(i.line, i.code) for i in report.issues] == [
        (1, "no_assistant_turn"),
        (2, "unknown_role"),
        (3, "empty_content"),
        (4, "roles_out_of_order"),
        (5, "wrong_type"),
        (6, "wrong_type"),
    ]
    messages = [i.message for i in report.issues]
    assert "add the answer" in messages[0] and "use one of system, user, assistant, tool" in messages[1]
    assert "Message 2 (user) is out of order" in messages[3]


def test_missing_field_names_the_field() -> None:
    report = validate_bytes(b'{"instruction": "x"}\n', record_format="alpaca")
    assert report.issues[0].code == "missing_field" and '"output"' in report.issues[0].message


def test_unknown_format_names_the_fields() -> None:
    report = validate_bytes(b'{"question": "x", "reply": "y"}\n')
    assert report.issues[0].code == "unknown_format" and "question, reply" in report.issues[0].message


def test_parquet_wrong_schema_and_garbage(tmp_path: Path) -> None:
    wrong = tmp_path / "wrong.parquet"
    pq.write_table(pa.table({"numbers": [1, 2]}), wrong)
    report = Report(file_type="parquet")
    list(validate_items(read_items(wrong, "parquet"), report))
    assert [i.code for i in report.issues] == ["unknown_columns", "unknown_columns"]
    garbage = tmp_path / "garbage.parquet"
    garbage.write_bytes(b"PAR1 this is not parquet at all")
    report = Report(file_type="parquet")
    list(validate_items(read_items(garbage, "parquet"), report))
    assert [i.code for i in report.issues] == ["parquet_error"]


def test_json_array_reports_the_record_number() -> None:
    data = b'[{"prompt": "a", "completion": "b"},\n {"prompt": "c"},\n {"prompt": "e", "completion": "f"}]'
    assert _issues(data, "json") == [(2, "missing_field")]
    truncated = b'[{"prompt": "a", "completion": "b"}, {"prompt": '
    report = validate_bytes(truncated, "json")
    assert report.valid_lines == 1 and [i.code for i in report.issues] == ["json_truncated"]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.binary(max_size=3000)
    | st.lists(
        st.sampled_from(
            [
                GOOD,
                b"{",
                b"[",
                b"}",
                b'{"a": NaN}',
                b"\xef\xbb\xbf",
                b"\r",
                b"\xe2\x80\xa8",
                b'{"messages": []}',
                b'{"text": "t"}',
                b"\xff",
                b"[[[[[[",
                b'"\\ud800"',
                b"   ",
                b"",
                b"null",
                b"1",
                b'{"prompt": 1}',
            ]
        ),
        max_size=40,
    ).map(lambda parts: b"\n".join(parts))
)
def test_validator_never_raises_and_accounts_for_every_line(data: bytes) -> None:
    report = validate_bytes(data)
    lines = data.split(b"\n")
    if lines and lines[0].startswith(b"\xef\xbb\xbf"):
        lines[0] = lines[0][3:]
    non_blank = sum(1 for line in lines if line.removesuffix(b"\r").strip())
    assert report.valid_lines + report.invalid_lines == non_blank
    assert all(1 <= issue.line <= len(lines) for issue in report.issues)
    for file_type in ("json", "csv", "text"):
        validate_bytes(data, file_type)  # never raises for the other readers either
