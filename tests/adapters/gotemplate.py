"""A small interpreter for the part of Go's text/template that Ollama's chat templates use: ``range .Messages``,
``if``/``else if``/``else`` with ``eq .Role "…"``, ``.Content``, ``.Role``, ``.System``, and the ``{{-``/``-}}`` trim
markers. Written for the tests, independently of the code that writes Modelfiles, to render a Modelfile's
TEMPLATE as Ollama would."""

from __future__ import annotations

import re
from typing import Any

ACTION = re.compile(r"{{(-?)\s*(.*?)\s*(-?)}}", re.S)


def _tokens(template: str) -> list[tuple[str, str]]:
    """Text and actions, with the trim markers applied to the neighbouring text."""
    tokens: list[tuple[str, str]] = []
    position = 0
    trim_next = False
    for match in ACTION.finditer(template):
        text = template[position : match.start()]
        if trim_next:
            text = text.lstrip()
        if match.group(1):
            text = text.rstrip()
        tokens.append(("text", text))
        tokens.append(("action", match.group(2)))
        trim_next = bool(match.group(3))
        position = match.end()
    tail = template[position:]
    tokens.append(("text", tail.lstrip() if trim_next else tail))
    return tokens


def _parse(tokens: list[tuple[str, str]], index: int, stop: tuple[str, ...]) -> tuple[list[Any], int, str]:
    """Nodes until one of the ``stop`` actions; the index after it and which one it was."""
    nodes: list[Any] = []
    while index < len(tokens):
        kind, value = tokens[index]
        index += 1
        if kind == "text":
            nodes.append(("text", value))
        elif value.startswith(stop) if stop else False:
            return nodes, index, value
        elif value.startswith("range "):
            body, index, _ = _parse(tokens, index, ("end",))
            nodes.append(("range", value[6:].strip(), body))
        elif value.startswith("if "):
            branches: list[tuple[str | None, list[Any]]] = []
            condition: str | None = value[3:].strip()
            while True:
                body, index, ended = _parse(tokens, index, ("else", "end"))
                branches.append((condition, body))
                if ended == "end":
                    break
                condition = ended[8:].strip() if ended.startswith("else if ") else None
            nodes.append(("if", branches))
        else:
            nodes.append(("value", value))
    if stop:
        raise ValueError(f"unclosed block, expected one of {stop}")
    return nodes, index, ""


def _value(expression: str, scope: dict[str, Any], root: dict[str, Any]) -> Any:
    expression = expression.strip()
    if expression.startswith('"'):
        return expression.strip('"')
    if expression.startswith("$."):
        return root.get(expression[2:], "")
    if expression.startswith("."):
        return scope.get(expression[1:], "")
    raise ValueError(f"unsupported expression {expression!r}")


def _true(condition: str, scope: dict[str, Any], root: dict[str, Any]) -> bool:
    if condition.startswith("eq "):
        left, right = re.findall(r'"[^"]*"|\S+', condition[3:])
        return bool(_value(left, scope, root) == _value(right, scope, root))
    return bool(_value(condition, scope, root))


def _run(nodes: list[Any], scope: dict[str, Any], root: dict[str, Any]) -> str:
    out = []
    for node in nodes:
        if node[0] == "text":
            out.append(node[1])
        elif node[0] == "value":
            out.append(str(_value(node[1], scope, root)))
        elif node[0] == "range":
            for item in _value(node[1], scope, root) or []:
                out.append(_run(node[2], item, root))
        elif node[0] == "if":
            for condition, body in node[1]:
                if condition is None or _true(condition, scope, root):
                    out.append(_run(body, scope, root))
                    break
    return "".join(out)


def render(template: str, **data: Any) -> str:
    nodes, _index, _stop = _parse(_tokens(template), 0, ())
    return _run(nodes, data, data)
