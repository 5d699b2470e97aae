"""docs/reliability.md stays true: every test it names exists (file and function, read with ast), and where
../shared is beside the clone, every row of its RELIABILITY.md has a row there."""

from __future__ import annotations

import ast
import re

import pytest

from tests.conftest import ROOT

PROMISES = ROOT.parent / "shared" / "RELIABILITY.md"
DOC = ROOT / "docs" / "reliability.md"


def table_rows(text: str) -> dict[str, str]:
    """First cell -> the rest of the row, for every body row of every Markdown table."""
    rows = {}
    for line in text.splitlines():
        if not line.startswith("|") or set(line.replace("|", "").strip()) <= {"-", " "}:
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells[0] in ("fault", "input", "class", "load"):
            continue  # a header
        rows[cells[0]] = " | ".join(cells[1:])
    return rows


def test_every_row_names_tests_that_exist() -> None:
    """Read from the repository alone: each row of docs/reliability.md names tests, and each exists."""
    documented = table_rows(DOC.read_text())
    assert len(documented) >= 30, documented
    for row, cell in documented.items():
        named = re.findall(r"`(tests/[\w/]+\.py)::(\w+)`", cell)
        assert named, f"{row!r} names no test"
        for path, function in named:
            source = ROOT / path
            assert source.is_file(), f"{row!r}: {path} does not exist"
            functions = {n.name for n in ast.walk(ast.parse(source.read_text())) if isinstance(n, ast.FunctionDef)}
            assert function in functions, f"{row!r}: {path} has no {function}"


def test_every_promise_of_reliability_md_has_a_row() -> None:
    """RELIABILITY.md is the project's shared promise list beside the repository (../shared); where a clone has
    it, every one of its rows must have a row here."""
    if not PROMISES.exists():
        pytest.skip(f"{PROMISES} is not beside this clone")
    promised = table_rows(PROMISES.read_text())
    assert len(promised) >= 30, promised  # the four tables were read
    missing = [row for row in promised if row not in table_rows(DOC.read_text())]
    assert not missing, f"add these rows of RELIABILITY.md to docs/reliability.md: {missing}"
