"""A python grader is the user's code: attacked here the way a hostile member would. Each attempt ends as a
per-sample error naming what was refused (or the limit hit), the calling process carries on, and nothing is
left behind."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from app.graders.sandbox import Limits, network_namespaces, run_python

QUICK = Limits(cpu_seconds=2, wall_seconds=6, memory_bytes=512 * 1024 * 1024, file_bytes=1024 * 1024)


def run(body: str, *, limits: Limits = QUICK) -> Any:
    source = "import os, json\ndef grade(sample, item):\n" + "".join(f"    {line}\n" for line in body.splitlines())
    return run_python(source, sample={"output_text": "a", "output_json": None}, item={}, limits=limits)


def test_a_grader_scores_and_may_use_its_own_directory() -> None:
    result = run("open('notes.txt', 'w').write('kept')\nreturn len(open('notes.txt').read()) / 4")
    assert result.score == 1.0 and result.error is None


def test_network_is_refused(env: Any) -> None:
    result = run("import socket\ns = socket.create_connection(('127.0.0.1', 5432), timeout=2)\nreturn 1")
    assert result.score is None and "network access" in (result.error or "")


def test_the_network_namespace_is_empty_when_the_kernel_allows_one() -> None:
    if not network_namespaces():
        pytest.skip("this kernel does not let an unprivileged user make a network namespace")
    assert run("return 1").isolated_network


def test_the_data_directory_and_the_secret_key_are_out_of_reach(env: Any) -> None:
    key = Path(env.data_dir) / "secret_key"
    env.resolved_secret_key()  # written on first use
    assert key.is_file()
    for path in (str(key), str(env.data_dir), "/etc/passwd", str(Path.home())):
        result = run(f"return len(open({path!r}).read())")
        assert result.score is None and "refuses reading" in (result.error or ""), (path, result)
    listing = run(f"return len(os.listdir({str(env.data_dir)!r}))")
    assert listing.score is None and "refuses reading" in (listing.error or "")


def test_writing_outside_its_directory_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "planted.txt"
    result = run(f"open({str(target)!r}, 'w').write('x')\nreturn 1")
    assert result.score is None and "refuses writing" in (result.error or "")
    assert not target.exists()


def test_processes_and_native_code_are_refused() -> None:
    for body, words in (
        ("while True:\n    os.fork()", "starting processes"),
        ("import subprocess\nsubprocess.run(['id'])\nreturn 1", "refuses the module '_posixsubprocess'"),
        ("os.system('id')\nreturn 1", "starting programs"),
        ("import ctypes\nreturn 1", "module 'ctypes'"),
        ("os.kill(1, 9)\nreturn 1", "signals"),
    ):
        result = run(body)
        assert result.score is None and words in (result.error or ""), (body, result)


def test_limits_end_a_memory_hog_an_endless_loop_a_sleeper_a_huge_file_and_huge_output() -> None:
    hog = run("block = bytearray(2 * 1024 ** 3)\nreturn 1")
    assert hog.score is None and "memory" in (hog.error or "")
    loop = run("while True:\n    pass")
    assert loop.score is None and "2 s of CPU" in (loop.error or "")
    sleeper = run("import time\ntime.sleep(60)\nreturn 1")
    assert sleeper.score is None and "6 s limit" in (sleeper.error or "") and sleeper.seconds < 20
    big_file = run("open('big', 'wb').write(b'x' * (8 * 1024 * 1024))\nreturn 1")
    assert big_file.score is None and "file past its 1 MB limit" in (big_file.error or "")
    flood = run("os.write(1, b'x' * (20 * 1024 * 1024))\nreturn 1")
    assert flood.score is None and "KB to its output" in (flood.error or "")
    chatty = run("print('y' * (10 * 1024 * 1024))\nreturn 0.5")
    assert chatty.score == 0.5 and len(chatty.printed) <= 4000


def test_a_bad_return_or_an_exception_is_a_clear_error_never_a_pass() -> None:
    assert "must return a number" in (run("return 'yes'").error or "")
    assert "must return a number" in (run("return True").error or "")
    failed = run("return 1 / 0")
    assert failed.score is None and "ZeroDivisionError" in (failed.error or "")
    assert "defines no function grade" in (run_python("x = 1", sample={}, item={}, limits=QUICK).error or "")


def test_no_secret_reaches_the_childs_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REFINERY_SECRET_KEY", "super-secret-value-123")
    result = run("return float('super-secret-value-123' in json.dumps(dict(os.environ)))")
    assert result.score == 0.0
    assert os.environ["REFINERY_SECRET_KEY"] == "super-secret-value-123"  # the caller's own is untouched
