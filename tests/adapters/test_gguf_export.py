"""GGUF export on the tiny model: a LoRA trained here is exported as f16 and q8_0 models and as a GGUF LoRA file
through the JSON API's background runs; the files are read back (transformers' GGUF loader for the models, the
gguf library's reader for the LoRA) and give the logits of the adapter on its base; the Modelfile's template,
rendered as Ollama would, gives the same text as the model's own chat template. Refusals, another user's 404 and
the command line. The real SmolLM2 is exported in tests/slow/test_smollm2_lora.py."""

from __future__ import annotations

import io
import json
import re
import zipfile
from pathlib import Path
from typing import Any

import pytest

from tests.adapters import gotemplate
from tests.conftest import csrf_of, login
from worker import lifecycle

pytestmark = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
IDS = [[1, 5, 9, 42, 7, 3, 100, 2000, 17]]


def _trained(client: Any, setup: dict[str, Any]) -> str:
    spec = {"max_steps": 2, "batch_size": 4, "eval_steps": 0, "max_seq_length": 64, "learning_rate": 0.05}
    body = {"model_id": setup["model"], "dataset_version_id": setup["version"], "spec": spec}
    job = client.post("/api/v1/jobs", json=body).json()
    lifecycle.execute(job["run"]["id"])
    assert client.get(f"/api/v1/jobs/{job['id']}").json()["status"] == "succeeded"
    return str(job["id"])


def export_and_unzip(client: Any, job_id: str, fmt: str, tmp_path: Path) -> Path:
    run = client.post(f"/api/v1/adapters/{job_id}/gguf/{fmt}")
    assert run.status_code == 202, run.text
    lifecycle.execute(run.json()["id"])
    [state] = [s for s in client.get(f"/api/v1/adapters/{job_id}/gguf").json() if s["format"] == fmt]
    assert state["ready"], state
    download = client.get(f"/api/v1/adapters/{job_id}/gguf/{fmt}/archive.zip")
    assert download.status_code == 200
    out = tmp_path / fmt
    with zipfile.ZipFile(io.BytesIO(download.content)) as archive:
        names = set(archive.namelist())
        assert state["file"] in names and "README.md" in names
        assert ("Modelfile" in names) == (fmt != "lora")
        archive.extractall(out)
    single = client.get(f"/api/v1/adapters/{job_id}/gguf/{fmt}/file")
    assert single.status_code == 200 and single.content == (out / state["file"]).read_bytes()
    return out / state["file"]


def adapter_reference(job_id: str) -> tuple[Any, Any, Path, Path]:
    """The adapter on its base through PEFT (what the export must reproduce), and the base alone."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from app.core.config import get_settings

    artifacts = get_settings().artifacts_dir
    base_dir = next((artifacts / "models").glob("*/config.json")).parent
    adapter_dir = artifacts / "jobs" / job_id.replace("-", "") / "final"
    tuned = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(str(base_dir)), str(adapter_dir)).eval()
    return tuned, AutoModelForCausalLM.from_pretrained(str(base_dir)).eval(), base_dir, adapter_dir


def _apply_gguf_lora(base: Any, path: Path, adapter_dir: Path) -> Any:
    """The base with a GGUF LoRA file's deltas added as llama.cpp adds them: W + alpha/r * B·A, the query and key
    rows returned from llama.cpp's rotary order. Written here from the GGUF layout, not with the exporter."""
    import gguf
    import numpy as np
    import torch

    reader = gguf.GGUFReader(str(path))
    assert reader.get_field("general.type").contents() == "adapter"
    assert reader.get_field("adapter.type").contents() == "lora"
    alpha = float(reader.get_field("adapter.lora.alpha").contents())
    config = json.loads((adapter_dir / "adapter_config.json").read_text())
    rank = int(config["r"])
    tensors = {t.name: np.array(t.data, dtype=np.float32) for t in reader.tensors}
    sites = {"attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
             "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
             "ffn_down": "mlp.down_proj"}  # fmt: skip
    heads = {"attn_q": base.config.num_attention_heads, "attn_k": base.config.num_key_value_heads}
    changed = 0
    with torch.no_grad():
        for name, lora_a in tensors.items():
            if not name.endswith(".lora_a"):
                continue
            block, site = re.match(r"blk\.(\d+)\.(\w+)\.weight\.lora_a", name).groups()  # type: ignore[union-attr]
            lora_b = tensors[name[:-1] + "b"]
            if site in heads:  # undo the interleaving of each head's rotary pairs
                n = heads[site]
                lora_b = lora_b.reshape(n, lora_b.shape[0] // n // 2, 2, -1).swapaxes(1, 2).reshape(lora_b.shape)
            module = base.get_submodule(f"model.layers.{block}.{sites[site]}")
            module.weight += torch.from_numpy(alpha / rank * (lora_b @ lora_a))
            changed += 1
    from safetensors import safe_open

    with safe_open(str(adapter_dir / "adapter_model.safetensors"), "np") as peft_file:
        names = list(peft_file.keys())
    assert changed == sum(1 for key in names if key.endswith("lora_A.weight")) > 0
    return base


def test_gguf_exports_read_back_with_the_adapters_logits(client: Any, setup: dict[str, Any], tmp_path: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    job_id = _trained(client, setup)
    states = {s["format"]: s for s in client.get(f"/api/v1/adapters/{job_id}/gguf").json()}
    assert set(states) == {"f16", "q8_0", "q4_0", "lora"}
    assert not any(s["ready"] or s["refused"] for s in states.values())
    tuned, base, _base_dir, adapter_dir = adapter_reference(job_id)
    ids = torch.tensor(IDS)
    with torch.no_grad():
        expected = tuned(input_ids=ids).logits
        plain = base(input_ids=ids).logits
    assert (expected - plain).abs().max() > 1e-3  # the adapter changes the answers, so the comparison means something

    for fmt, tolerance in (("f16", 2e-3), ("q8_0", 2e-2)):
        path = export_and_unzip(client, job_id, fmt, tmp_path)
        loaded = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name).eval()
        with torch.no_grad():
            got = loaded(input_ids=ids).logits
        spread = expected.abs().max()
        assert (got - expected).abs().max() <= tolerance * spread, (fmt, (got - expected).abs().max(), spread)
        if fmt == "f16":  # the same next token everywhere
            assert torch.equal(got.argmax(-1), expected.argmax(-1))
        else:  # q8_0: wherever the reference's best two are further apart than its error allowance (a near tie
            # on this random tiny model may flip within 8-bit rounding: that is what quantising is)
            top2 = expected.topk(2, dim=-1).values
            clear = (top2[..., 0] - top2[..., 1]) > 2 * tolerance * spread
            assert torch.equal(got.argmax(-1)[clear], expected.argmax(-1)[clear]), fmt
    # every format carries the same tokenizer (one writer): read back from one file, it tokenises as the model's
    tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    own = AutoTokenizer.from_pretrained(str(adapter_dir))
    text = "Add 12 and 30.<|im_end|> ünïcode ✓"
    assert tokenizer(text)["input_ids"] == own(text)["input_ids"]
    assert tokenizer.chat_template == own.chat_template

    # the Modelfile renders conversations as the model's chat template does
    modelfile = (tmp_path / "q8_0" / "Modelfile").read_text()
    assert modelfile == client.get(f"/api/v1/adapters/{job_id}/gguf/q8_0/Modelfile").text
    assert modelfile.startswith("FROM ./model-q8_0.gguf\n") and 'PARAMETER stop "<|im_end|>"' in modelfile
    template = re.search(r'TEMPLATE """(.*?)"""', modelfile, re.S).group(1)  # type: ignore[union-attr]
    system = re.search(r'SYSTEM """(.*?)"""', modelfile, re.S).group(1)  # type: ignore[union-attr]
    assert "SmolLM" in system  # the template's own default system prompt
    turns = [{"role": "user", "content": "Hi <b>there</b>"}, {"role": "assistant", "content": "Hello."}]
    for messages in (
        [turns[0]],
        [*turns, {"role": "user", "content": "Again?"}],
        [{"role": "system", "content": "Terse."}, *turns],
    ):
        ollama_messages = (
            messages if messages[0]["role"] == "system" else [{"role": "system", "content": system}, *messages]
        )
        ours = gotemplate.render(
            template, Messages=[{"Role": m["role"], "Content": m["content"]} for m in ollama_messages]
        )
        theirs = own.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        assert ours == theirs

    # the LoRA alone, applied the way llama.cpp applies it
    path = export_and_unzip(client, job_id, "lora", tmp_path)
    applied = _apply_gguf_lora(AutoModelForCausalLM.from_pretrained(str(_base_dir)).eval(), path, adapter_dir)
    with torch.no_grad():
        got = applied(input_ids=ids).logits
    assert (got - expected).abs().max() <= 2e-3 * expected.abs().max()
    assert client.get(f"/api/v1/adapters/{job_id}/gguf/lora/Modelfile").status_code == 404

    # again: already done; an unknown format; the command line copies the finished files
    assert client.post(f"/api/v1/adapters/{job_id}/gguf/f16").status_code == 409
    unknown = client.post(f"/api/v1/adapters/{job_id}/gguf/q5_k")
    assert unknown.status_code == 422 and "f16, q8_0, q4_0, lora" in unknown.json()["error"]["message"]
    from app.cli import main

    out = tmp_path / "cli"
    assert main(["adapters", "export", job_id, str(out), "--gguf", "f16"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["Modelfile", "README.md", "export.json", "model-f16.gguf"]

    # the adapter page offers the downloads and shows the Modelfile, escaped
    page = client.get(f"/adapters/{job_id}")
    assert f"/adapters/{job_id}/gguf/q8_0/archive.zip" in page.text and "ollama create" in page.text
    assert "&lt;|im_start|&gt;" in page.text

    # another user sees none of it
    client.post("/logout", data={"csrf_token": csrf_of(client, "/models")})
    client.headers.pop("X-CSRF-Token", None)
    login_other(client)
    for path_ in ("gguf", "gguf/f16/archive.zip", "gguf/f16/file", "gguf/q8_0/Modelfile"):
        assert client.get(f"/api/v1/adapters/{job_id}/{path_}").status_code == 404
    client.headers["X-CSRF-Token"] = csrf_of(client, "/models")
    assert client.post(f"/api/v1/adapters/{job_id}/gguf/q4_0").status_code == 404


def login_other(client: Any) -> None:
    from app.db.models import Role
    from app.db.session import session_scope
    from app.users.service import create_user

    with session_scope() as session:
        create_user(session, email="other@example.com", password="another-horse-2", role=Role.member)
    login(client, "other@example.com", "another-horse-2")
