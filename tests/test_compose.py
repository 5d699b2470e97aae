"""docker-compose.yml is checked against the Compose file schema (no Docker engine runs here)."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest
import yaml

from tests.conftest import REQUIRE_SERVICES, ROOT


def _compose_config(path: str) -> subprocess.CompletedProcess[str]:
    tool = shutil.which("docker-compose")
    if tool is None:
        if REQUIRE_SERVICES:
            pytest.fail("docker-compose (Debian package) is not installed; .ci/run installs it")
        pytest.skip("docker-compose is not installed")
    env = {**os.environ, "REFINERY_SECRET_KEY": "x" * 40}
    return subprocess.run(
        [tool, "-f", path, "config", "-q"], capture_output=True, text=True, env=env, cwd=ROOT, timeout=60
    )


def test_compose_file_is_valid() -> None:
    result = _compose_config(str(ROOT / "docker-compose.yml"))
    assert result.returncode == 0, result.stderr


def test_compose_validator_rejects_a_broken_file(tmp_path: object) -> None:
    from pathlib import Path

    broken = Path(str(tmp_path)) / "broken.yml"
    broken.write_text("services:\n  web:\n    image: x\n    restart_policy_typo: always\n")
    assert _compose_config(str(broken)).returncode != 0


def test_compose_runs_the_production_processes() -> None:
    spec = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = spec["services"]
    assert {"postgres", "redis", "migrate", "web", "worker-cpu", "worker-gpu", "inference"} <= set(services)
    assert services["inference"]["command"] == ["refinery", "inference"]
    gpu = services["worker-gpu"]
    assert gpu["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]
    assert "--concurrency" in gpu["command"] and gpu["command"][gpu["command"].index("--concurrency") + 1] == "1"
    for name in ("postgres", "redis", "web", "worker-cpu", "worker-gpu", "inference"):
        assert "healthcheck" in services[name], name
    assert services["web"]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
