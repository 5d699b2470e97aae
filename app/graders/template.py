"""OpenAI's grader templates: ``{{ item.answer }}``, ``{{ sample.output_text }}``, ``{{ sample.output_json.x }}``.
A plain substitution of dotted paths (no expressions, nothing executed); a path that names nothing is an error
that says which."""

from __future__ import annotations

import json
import re
from typing import Any

PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_]\w*(?:\.\w+)*)\s*\}\}")
NAMESPACES = ("item", "sample")


class TemplateError(ValueError):
    """A template names a variable the item or sample does not have."""


def sample_namespace(output_text: str) -> dict[str, Any]:
    """What ``sample`` holds for a model's answer: its text, and its JSON when the text is JSON."""
    try:
        output_json = json.loads(output_text)
    except ValueError:
        output_json = None
    return {"output_text": output_text, "output_json": output_json}


def _lookup(path: str, values: dict[str, Any]) -> Any:
    head, *rest = path.split(".")
    if head not in NAMESPACES:
        raise TemplateError(f"'{{{{ {path} }}}}': templates read 'item.…' or 'sample.…'")
    value: Any = values.get(head)
    for part in rest:
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            raise TemplateError(f"'{{{{ {path} }}}}': the {head} has no '{part}'")
    return value


def render(template: str, *, item: dict[str, Any], sample: dict[str, Any]) -> str:
    """The template with every placeholder replaced: strings as they are, anything else as JSON."""
    values = {"item": item, "sample": sample}

    def one(match: re.Match[str]) -> str:
        value = _lookup(match.group(1), values)
        return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)

    return PLACEHOLDER.sub(one, template)


def check(template: str) -> None:
    """Refuse placeholders outside the two namespaces before anything runs."""
    for match in PLACEHOLDER.finditer(template):
        if match.group(1).split(".")[0] not in NAMESPACES:
            raise TemplateError(f"'{{{{ {match.group(1)} }}}}': templates read 'item.…' or 'sample.…'")


def record_item(record: dict[str, Any], reference: str | None = None) -> dict[str, Any]:
    """What ``item`` holds when a dataset record is graded (a job's evaluation, a reinforcement job's reward):
    the record's own fields beside its conversation, as in OpenAI's training lines (``{{ item.answer }}`` reads
    a line's ``answer``), its ``messages``, and as ``reference`` the answer the record gives, if any."""
    item: dict[str, Any] = dict(record.get("extra") or record.get("input_extra") or {})
    for key in ("messages", "prompt", "chosen", "rejected"):
        if key in record:
            item[key] = record[key]
    if reference is not None:
        item["reference"] = reference
    return item
