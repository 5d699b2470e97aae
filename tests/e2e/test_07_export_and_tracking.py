"""Taking the model elsewhere, in the browser (Debian's Chromium): the short job's adapter exported as q8_0 GGUF
from its page, with the Ollama Modelfile shown there. (A job's run in MLflow's own pages is pictured by
tests/jobs/test_tracking.py, where a real MLflow server runs.)"""

from __future__ import annotations

from typing import Any

import pytest

from tests.e2e.conftest import _api, ensure_quick_adapter, logged_in_page, shot

pytestmark = pytest.mark.e2e


def test_export_gguf_from_the_adapter_page(browser: Any, live_server: str) -> None:
    job_id = ensure_quick_adapter(browser, live_server)  # the short job (test_03_training), made here if alone
    page = logged_in_page(browser, live_server)
    page.goto(f"{live_server}/adapters/{job_id}")
    row = page.locator("#gguf tr[data-gguf=q8_0]")
    row.locator("button:has-text('Export')").click()
    page.wait_for_url(f"**/adapters/{job_id}#gguf")
    page.wait_for_selector("#gguf tr[data-gguf=q8_0] a:has-text('Download (.zip)')", timeout=300_000)
    assert "Ready" in row.inner_text()
    page.locator("#gguf tr[data-modelfile=q8_0] summary").click()
    modelfile = page.inner_text("#gguf tr[data-modelfile=q8_0] pre.small")
    assert modelfile.startswith("FROM ./model-q8_0.gguf") and "<|im_start|>assistant" in modelfile
    assert 'PARAMETER stop "<|im_end|>"' in modelfile
    shot(page, "17-gguf-export")
    api, _headers = _api(page)
    archive = api.get(f"{live_server}/adapters/{job_id}/gguf/q8_0/archive.zip")
    assert archive.ok and archive.body()[:2] == b"PK"
