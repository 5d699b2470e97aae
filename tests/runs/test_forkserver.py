"""The fork server (worker/forkserver.py): a child forked from it runs its module as a fresh interpreter would
and reports its exit status; a changed environment (one the imported libraries read) gets a new server while
the old one retires; the server goes when the process that started it goes. The lifecycle's own tests (training
faults, evaluations, exports) run their children through it, so pause, cancel, kills and failpoints set after
the server started are proven there."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import wait_for
from worker.forkserver import ForkedChild, ForkServer
from worker.protocol import child_env, process_alive


@pytest.fixture
def server() -> Iterator[ForkServer]:
    forks = ForkServer()
    forks.enable()
    wait_for(lambda: bool(forks._path) and os.path.exists(forks._path), timeout=120, what="the fork server's socket")
    yield forks
    path = forks._path
    forks.close()
    assert not os.path.exists(path)  # no socket left behind


def test_a_forked_child_runs_its_module_and_reports_how_it_ended(server: ForkServer, tmp_path: Path) -> None:
    log = tmp_path / "child.log"
    with log.open("ab") as stderr:
        child = server.spawn([sys.executable, "-m", "worker.export.adapter_check", "{}"], stderr, child_env())
    assert isinstance(child, ForkedChild)
    assert child.stdout is not None and child.stdout.read() == ""
    assert child.wait(timeout=60) == 1  # the module ran as __main__ and failed on the empty spec
    assert 'adapter_check.py", line' in log.read_text() and "KeyError: 'adapter_dir'" in log.read_text()
    assert child.poll() == 1
    # a module outside the forkable ones, or another interpreter, starts afresh (the caller's Popen)
    with log.open("ab") as stderr:
        assert server.spawn([sys.executable, "-m", "worker.ingest", "{}"], stderr, child_env()) is None
        assert server.spawn(["/bin/true"], stderr, child_env()) is None


def test_a_changed_environment_gets_a_new_server_and_the_old_one_retires(server: ForkServer, tmp_path: Path) -> None:
    first = server._proc
    assert first is not None
    changed = {**child_env(), "OMP_NUM_THREADS": "7"}  # read by the libraries when imported
    with (tmp_path / "child.log").open("ab") as stderr:
        assert server.spawn([sys.executable, "-m", "worker.export.adapter_check", "{}"], stderr, changed) is None
        wait_for(lambda: first.poll() is not None, timeout=30, what="the old server to retire")
        assert server._proc is not None and server._proc.pid != first.pid
        # a REFINERY_* setting is read at run time: it reaches the child through the same server
        wait_for(lambda: os.path.exists(server._path), timeout=120, what="the new server's socket")
        again = server.spawn(
            [sys.executable, "-m", "worker.export.adapter_check", "{}"], stderr, {**changed, "REFINERY_X": "1"}
        )
    assert isinstance(again, ForkedChild) and again.wait(timeout=60) == 1


def test_the_server_goes_with_the_process_that_started_it(tmp_path: Path) -> None:
    script = textwrap.dedent(
        """
        import os, sys, time
        from worker.forkserver import ForkServer
        forks = ForkServer()
        forks.enable()
        while not os.path.exists(forks._path):
            time.sleep(0.1)
        print(forks._proc.pid, forks._path, flush=True)
        time.sleep(600)
        """
    )
    owner = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parents[2]
    )
    pid = path = ""
    try:
        assert owner.stdout is not None
        pid, path = owner.stdout.readline().split()
        assert process_alive(int(pid)) and os.path.exists(path)
        owner.send_signal(signal.SIGKILL)
        owner.wait(timeout=10)
        wait_for(lambda: not process_alive(int(pid)), timeout=10, what="the orphaned fork server to exit")
        assert not os.path.exists(path)
    finally:
        if owner.poll() is None:
            owner.kill()
            owner.wait(timeout=10)
        if pid and process_alive(int(pid)):  # stop what this test started, whatever happened
            os.kill(int(pid), signal.SIGKILL)
