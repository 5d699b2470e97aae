"""Layers: the web process never imports the training libraries (checked in a fresh interpreter), imports go
down the layers only, and no code runs shells, remote code or pickles."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

from tests.conftest import ROOT


def test_web_app_imports_no_torch(tmp_path: object) -> None:
    code = (
        "import sys\n"
        "from app.main import create_app\n"
        "create_app()\n"
        "import app.cli, app.basemodels.service, app.runs.service, app.users.service\n"
        "heavy = sorted(m for m in ('torch', 'transformers', 'peft', 'trl', 'bitsandbytes') if m in sys.modules)\n"
        "print(heavy)\n"
        "sys.exit(1 if heavy else 0)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={"REFINERY_DATA_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_no_shell_in_subprocesses() -> None:
    """Every subprocess is started with an argv list; shell=True would open command injection."""
    offenders = [
        str(path.relative_to(ROOT))
        for folder in ("app", "worker")
        for path in (ROOT / folder).rglob("*.py")
        if "shell=True" in path.read_text() or "os.system(" in path.read_text()
    ]
    assert offenders == []


def test_remote_code_and_pickle_loading_are_never_enabled() -> None:
    """Model code from a repository never runs, and weights load from safetensors only: no
    ``trust_remote_code=True``, no ``torch.load`` and no ``use_safetensors=False`` anywhere we load models."""
    offenders = [
        f"{path.relative_to(ROOT)}: {needle}"
        for folder in ("app", "worker")
        for path in (ROOT / folder).rglob("*.py")
        for needle in ("trust_remote_code=True", "torch.load(", "use_safetensors=False", "pickle.load")
        if needle in path.read_text()
    ]
    assert offenders == []


def _imports(path: Any) -> set[str]:
    import ast

    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def test_imports_go_down_the_layers_only() -> None:
    """``app/core`` and ``app/db`` know no domain package; nothing in ``app`` imports ``worker`` (the web and the
    CLI reach the worker's code only by starting a process); function-level imports count too."""
    wrong = []
    for path in sorted((ROOT / "app").rglob("*.py")):
        where = path.relative_to(ROOT).as_posix()
        lower = where.startswith(("app/core/", "app/db/"))
        for name in _imports(path):
            top = name.split(".")
            if top[0] == "worker" or (lower and top[0] == "app" and len(top) > 1 and top[1] not in ("core", "db")):
                wrong.append(f"{where} imports {name}")
    assert wrong == [], "\n".join(sorted(set(wrong)))
