"""Path traversal: every name or id a user sends goes through the traversal corpus while an audit hook
records each file the process opens; nothing outside the data root (and the code Refinery runs) is opened,
and no answer carries the secret placed beside the data root."""

from __future__ import annotations

import sys
import sysconfig
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT
from tests.reliability.test_idor import _owned_objects

SECRET = "refinery-traversal-secret-5f1c"
_opened: list[str] = []
_recording = threading.Event()
_hooked = False


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if event == "open" and _recording.is_set() and args and isinstance(args[0], (str, bytes, Path)):
        _opened.append(args[0].decode(errors="replace") if isinstance(args[0], bytes) else str(args[0]))


@pytest.fixture
def opened_files() -> Iterator[list[str]]:
    """Paths this process opens once the test sets ``_recording`` (audit hooks cannot be removed: one hook,
    switched on and off)."""
    global _hooked
    if not _hooked:
        sys.addaudithook(_audit)
        _hooked = True
    _opened.clear()
    try:
        yield _opened
    finally:
        _recording.clear()


def corpus(target: str) -> list[str]:
    """Ways to spell "climb out of here to ``target``" in a path segment, a query value or a name."""
    up = ["../", "..%2f", "%2e%2e%2f", "%2e%2e/", "%252e%252e%252f", "..\\", "..%5c", "．．／", "%c0%ae%c0%ae/"]
    spellings = [step * 8 + target for step in up]
    return [*spellings, "/" + target, f"/{target}%00.jsonl", f"....//....//{target}", f"{target}\x00", "/etc/passwd"]


def _allowed_roots(data: Path) -> list[Path]:
    roots = [data, ROOT, Path(sys.prefix), Path(sys.base_prefix), Path(sysconfig.get_paths()["purelib"]), Path("/usr")]
    return [r.resolve() for r in roots]


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_no_name_or_id_opens_a_file_outside_the_data_root(
    client: Any, setup: dict[str, Any], env: Any, tmp_path: Path, opened_files: list[str], loopback_judges: None
) -> None:
    ids = _owned_objects(client, setup, tmp_path)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text(SECRET)
    data = env.data_dir.resolve()
    target = str((outside / "secret.txt").relative_to(tmp_path))  # outside/secret.txt, reached by climbing
    spool = Path(tempfile.gettempdir()).resolve()
    answers = []
    _recording.set()
    for payload in corpus(target):
        quoted = payload.replace("\x00", "%00")
        requests: list[tuple[str, str, dict[str, Any]]] = [
            # ids and names in paths (string-typed ones reach the code; UUID-typed ones must be refused)
            ("GET", f"/datasets/{ids['dataset_id']}/versions/{ids['version_id']}/records/{quoted}", {}),
            ("GET", f"/v1/files/{quoted}", {}),
            ("GET", f"/v1/files/{quoted}/content", {}),
            ("GET", f"/v1/models/{quoted}", {}),
            ("GET", f"/api/v1/datasets/{quoted}", {}),
            ("GET", f"/api/v1/jobs/{quoted}/adapter", {}),
            ("GET", f"/api/v1/evaluations/{ids['evaluation_id']}/judgements/{quoted}/verdicts", {}),
            ("PUT", f"/api/v1/evaluations/{ids['evaluation_id']}/labels/{quoted}", {"json": {"choice": "tie"}}),
            ("GET", f"/static/{quoted}", {}),
            # names in queries, forms and bodies
            ("GET", f"/api/v1/datasets/{ids['dataset_id']}/versions/{ids['version_id']}/records?q={quoted}", {}),
            ("GET", f"/playground?a={quoted}", {}),
            ("POST", f"/api/v1/jobs/{ids['job_id']}/resume", {"json": {"checkpoint": payload[:40]}}),
            (
                "POST",
                "/v1/chat/completions",
                {"json": {"model": payload, "messages": [{"role": "user", "content": "x"}]}},
            ),
            (
                "PUT",
                f"/api/v1/cleanings/{ids['cleaning_id']}/overrides",
                {"json": {"items": [{"record_id": payload[:64], "action": "drop"}]}},
            ),
            # an upload's own file name and display name
            (
                "POST",
                "/api/v1/datasets",
                {"files": {"file": (payload, b'{"text": "a b c"}\n')}, "data": {"name": payload}},
            ),
        ]
        for method, url, kwargs in requests:
            response = client.request(method, url, **kwargs)
            answers.append((method, url, response.status_code))
            assert response.status_code < 500, (url, response.text[:300])
            assert SECRET not in response.text and "root:x:0:0" not in response.text, url
            if method == "GET" and response.status_code == 200 and "content" in url:
                pytest.fail(f"{url} served a file")
    _recording.clear()
    # the stored uploads are named by the server: nothing was written under a user's name
    uploads = {p.name for p in (env.artifacts_dir / "uploads").iterdir()}
    assert all(len(name) == 32 and name.isalnum() for name in uploads), uploads
    assert not (outside / "x").exists() and sorted(p.name for p in outside.iterdir()) == ["secret.txt"]

    roots = _allowed_roots(data)
    strays = []
    for path in set(opened_files):
        resolved = Path(path).resolve() if Path(path).is_absolute() else (Path.cwd() / path).resolve()
        if resolved.parent == spool:  # the form parser's anonymous spool files
            continue
        if not any(resolved.is_relative_to(root) for root in roots):
            strays.append(str(resolved))
    assert opened_files, "the audit hook saw no file at all"
    assert str((outside / "secret.txt").resolve()) not in {str(Path(p).resolve()) for p in opened_files}
    assert not strays, strays
