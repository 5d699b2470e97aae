"""A multi grader's ``calculate_output``: arithmetic over the graders' scores, parsed and evaluated without
eval() (numbers, the graders' names, + - * / and powers, parentheses, and a few functions)."""

from __future__ import annotations

import ast
import math
from collections.abc import Callable

FUNCTIONS: dict[str, Callable[..., float]] = {
    "min": min,
    "max": max,
    "abs": abs,
    "floor": math.floor,
    "ceil": math.ceil,
    "exp": math.exp,
    "sqrt": math.sqrt,
    "log": math.log,
}
OPERATORS: dict[type[ast.operator], Callable[[float, float], float]] = {
    ast.Add: lambda a, b: a + b,
    ast.Sub: lambda a, b: a - b,
    ast.Mult: lambda a, b: a * b,
    ast.Div: lambda a, b: a / b,
    ast.Pow: lambda a, b: a**b,
}


class FormulaError(ValueError):
    """The formula is not arithmetic over the graders' names."""


def parse(formula: str, names: set[str]) -> ast.expr:
    try:
        tree = ast.parse(formula, mode="eval").body
    except SyntaxError as exc:
        raise FormulaError(f"calculate_output does not parse: {exc.msg}") from None
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and node.id not in names and node.id not in FUNCTIONS:
            known = ", ".join(sorted(names))
            raise FormulaError(f"calculate_output names '{node.id}', which is not a grader here ({known})")
        if not isinstance(
            node, (ast.BinOp, ast.UnaryOp, ast.Constant, ast.Name, ast.Call, ast.Load, ast.USub, ast.UAdd, ast.operator)
        ):
            raise FormulaError(f"calculate_output may use numbers, grader names, + - * / ** and {', '.join(FUNCTIONS)}")
        if isinstance(node, ast.Constant) and not isinstance(node.value, (int, float)):
            raise FormulaError("calculate_output may only hold numbers besides the graders' names")
        if isinstance(node, ast.BinOp) and type(node.op) not in OPERATORS:
            raise FormulaError("calculate_output may use + - * / and ** only")
        if isinstance(node, ast.Call) and not (isinstance(node.func, ast.Name) and node.func.id in FUNCTIONS):
            raise FormulaError(f"calculate_output may call {', '.join(FUNCTIONS)} only")
    return tree


def evaluate(formula: str, scores: dict[str, float]) -> float:
    tree = parse(formula, set(scores))

    def value(node: ast.expr) -> float:
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
            return float(node.value)
        if isinstance(node, ast.Name):
            return float(scores[node.id])
        if isinstance(node, ast.UnaryOp):
            inner = value(node.operand)
            return -inner if isinstance(node.op, ast.USub) else inner
        if isinstance(node, ast.BinOp):
            left, right = value(node.left), value(node.right)
            if isinstance(node.op, ast.Pow) and abs(right) > 100:
                raise FormulaError("calculate_output: an exponent above 100 is refused")
            return float(OPERATORS[type(node.op)](left, right))
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            return float(FUNCTIONS[node.func.id](*(value(arg) for arg in node.args)))
        raise FormulaError("calculate_output holds something that is not arithmetic")

    try:
        return value(tree)
    except (ZeroDivisionError, OverflowError, ValueError, TypeError) as exc:
        raise FormulaError(f"calculate_output could not be computed: {exc}") from None
