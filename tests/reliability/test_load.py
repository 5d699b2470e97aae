"""Load on the embedded default, as CI can afford it: bench/load.py's three scenarios with shorter windows
and 5 MB uploads (the full run, with its latencies, is `bench/load.py`; figures in bench/results/load.md).
What must hold under load is asserted here; how fast it is, is reported there."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import load

pytestmark = pytest.mark.serial  # measures time or latency, or kills services: runs alone


@pytest.mark.timeout(900)
def test_fifty_chart_viewers_twenty_uploads_and_twenty_users_on_sqlite(tmp_path: Path) -> None:
    result = load.run(quick=True, folder=tmp_path)
    viewers, uploads, ui = result["viewers"], result["uploads"], result["ui"]
    # every viewer's chart kept updating while the job trained, with no failed request
    assert viewers["errors"] == [], viewers["errors"][:10]
    assert viewers["chart_rows_per_viewer_min"] >= 1, viewers
    assert viewers["metrics_poll"]["n"] >= viewers["viewers"] * 2
    assert viewers["steps_per_second"]["watched"] > 0  # the worker kept training
    # twenty uploads at once: all stored whole, the web process's memory bounded
    assert uploads["statuses"] == [202] and uploads["all_stored"], uploads
    assert uploads["web_rss_mb"]["peak"] - uploads["web_rss_mb"]["before"] < 200, uploads["web_rss_mb"]
    # people clicking and writing while the worker writes its progress: no 5xx, no "database is locked"
    assert ui["failures"] == [] and ui["database_is_locked_in_logs"] == 0, ui["failures"][:10]
    assert ui["writes"] > 0
