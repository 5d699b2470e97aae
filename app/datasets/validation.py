"""One pass over an upload: read, detect the format, canonicalise, and count what was wrong where."""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

from app.datasets.conversation import Invalid
from app.datasets.formats import Canonical, canonicalize, detect
from app.datasets.reading import Issue, Item, read_bytes

DETECT_SAMPLE = 200
MAX_STORED_ISSUES = 10_000


@dataclass(frozen=True)
class Accepted:
    line: int
    records: list[Canonical]


@dataclass
class Report:
    file_type: str
    record_format: str | None = None
    valid_lines: int = 0
    invalid_lines: int = 0
    records: int = 0
    issues: list[Issue] = field(default_factory=list)
    by_code: Counter[str] = field(default_factory=Counter)
    kinds: Counter[str] = field(default_factory=Counter)
    columns: list[str] = field(default_factory=list)
    column_mapping: dict[str, str] | None = None  # the mapping used: the user's, or one read from the column names
    mapping_auto: bool = False
    text_split: str | None = None  # plain text only: lines, paragraphs or document
    source: str = ""  # which file is being read now (see Issue.source)

    def add_issue(self, issue: Issue) -> None:
        if self.source and not issue.source:
            issue = replace(issue, source=self.source)
        self.invalid_lines += 1
        self.by_code[issue.code] += 1
        if len(self.issues) < MAX_STORED_ISSUES:
            self.issues.append(issue)

    def withdraw(self, accepted: Accepted, issue: Issue) -> None:
        """A line that parsed but fails a later check (e.g. too long for the model) becomes an issue."""
        self.valid_lines -= 1
        self.records -= len(accepted.records)
        for record in accepted.records:
            self.kinds[record.kind] -= 1
        self.add_issue(issue)

    def summary(self) -> dict[str, Any]:
        return {
            "file_type": self.file_type,
            "record_format": self.record_format,
            "valid_lines": self.valid_lines,
            "invalid_lines": self.invalid_lines,
            "records": self.records,
            "by_code": dict(self.by_code),
            "kinds": dict(self.kinds),
            "columns": self.columns,
            "column_mapping": self.column_mapping,
            "mapping_auto": self.mapping_auto,
            "text_split": self.text_split,
        }


def validate_items(
    items: Iterable[Item | Issue],
    report: Report,
    *,
    record_format: str | None = None,
    mapping: dict[str, str] | None = None,
) -> Iterator[Accepted]:
    """Yields accepted lines; everything else lands in the report (nothing is dropped silently)."""
    iterator = iter(items)
    head = list(itertools.islice(iterator, DETECT_SAMPLE))
    structured = [i.value for i in head if isinstance(i, Item)]
    if structured and isinstance(structured[0], dict):
        report.columns = list(structured[0].keys())[:50]
    fmt = record_format or _detect_with_mapping(structured, mapping)
    if fmt is None and not mapping and structured and isinstance(structured[0], dict):
        mapping = common_columns(list(structured[0]))
        fmt = _detect_with_mapping(structured, mapping) if mapping else None
        report.mapping_auto = fmt is not None
        mapping = mapping if fmt is not None else None
    report.column_mapping = mapping or None
    report.record_format = fmt
    tabular = report.file_type in ("csv", "parquet")
    for entry in itertools.chain(head, iterator):
        if isinstance(entry, Issue):
            report.add_issue(entry)
            continue
        if fmt is None:
            fields = sorted(entry.value)[:10] if isinstance(entry.value, dict) else [type(entry.value).__name__]
            code = "unknown_columns" if tabular and isinstance(entry.value, dict) else "unknown_format"
            report.add_issue(Issue(entry.line, code, {"fields": ", ".join(fields)}, _excerpt(entry)))
            continue
        try:
            records = canonicalize(entry.value, fmt, mapping)
        except Invalid as exc:
            report.add_issue(Issue(entry.line, exc.code, exc.params, _excerpt(entry)))
            continue
        except RecursionError:
            report.add_issue(Issue(entry.line, "json_too_deep", {}, ""))
            continue
        report.valid_lines += 1
        report.records += len(records)
        for record in records:
            report.kinds[record.kind] += 1
        yield Accepted(entry.line, records)


# Record field -> column, for column pairs that name the same thing in many published data sets
# (instruction/output, prompt/completion, chosen/rejected and text are recognised as they are).
COMMON_MAPPINGS: tuple[dict[str, str], ...] = (
    {"prompt": "question", "completion": "answer"},
    {"prompt": "question", "completion": "response"},
    {"prompt": "prompt", "completion": "response"},
    {"prompt": "prompt", "completion": "answer"},
    {"prompt": "query", "completion": "response"},
    {"prompt": "query", "completion": "answer"},
    {"prompt": "input", "completion": "output"},
    {"instruction": "instruction", "output": "response"},
    {"instruction": "instruction", "output": "answer"},
    {"prompt": "content", "completion": "summary"},
)


def common_columns(columns: list[str]) -> dict[str, str] | None:
    """A mapping from common column names (any case), or None when none applies."""
    by_lower = {str(c).strip().lower(): str(c) for c in columns}
    for mapping in COMMON_MAPPINGS:
        if all(source in by_lower for source in mapping.values()):
            return {target: by_lower[source] for target, source in mapping.items()}
    return None


def _detect_with_mapping(sample: list[Any], mapping: dict[str, str] | None) -> str | None:
    if mapping:
        sample = [
            {target: row.get(source) for target, source in mapping.items()} | row
            for row in sample
            if isinstance(row, dict)
        ]
    return detect(sample)


def _excerpt(item: Item) -> str:
    import json

    try:
        text = json.dumps(item.value, ensure_ascii=False) if not isinstance(item.value, str) else item.value
    except (TypeError, ValueError):
        text = repr(item.value)
    return text[:200]


def validate_bytes(data: bytes, file_type: str = "jsonl", record_format: str | None = None) -> Report:
    """Validate an in-memory file; never raises for any input (property-tested)."""
    report = Report(file_type=file_type)
    for _accepted in validate_items(read_bytes(data, file_type), report, record_format=record_format):
        pass
    return report
