"""bench/gpu.py, the script a lent GPU runs, on tiny shapes on this CPU: every run it makes on a GPU (but QLoRA,
which needs CUDA) goes through the same code here, so the script is known to work before a GPU is lent."""

from __future__ import annotations

import json
from pathlib import Path

from bench import gpu


def test_gpu_script_runs_on_tiny_shapes(smollm2_tokenizer_dir: Path, tmp_path: Path) -> None:
    sizes = ["--steps", "6", "--batch", "2", "--length", "96", "--new-tokens", "4"]
    report = gpu.main(["--tiny", *sizes, "--tokenizer", str(smollm2_tokenizer_dir), "--out", str(tmp_path)])
    runs = {r["run"]: r for r in report["runs"]}
    assert set(runs) == {"lora_bf16_packed", "qlora_nf4", "full", "dpo_lora"}
    assert "CUDA" in runs["qlora_nf4"]["skipped"]
    for name in ("lora_bf16_packed", "full", "dpo_lora"):
        run = runs[name]
        assert run["steps"] == 6 and run["tokens"] > 0 and run["tokens_per_second"] > 0, run
        assert run["estimate_gib"] > 0 and run["mfu"] is None and run["peak_gpu_gib"] is None, run
        assert run["first_loss"] is not None and run["last_loss"] is not None, run
    # the supervised runs learn something in six steps even on random weights: the loss falls
    assert runs["lora_bf16_packed"]["last_loss"] < runs["lora_bf16_packed"]["first_loss"]
    assert runs["full"]["last_loss"] < runs["full"]["first_loss"]
    decoding = report["decoding"]
    assert decoding["adapters"] == 4 and decoding["base_loads"] == 1 and decoding["generated_tokens"] == 16
    written = json.loads((tmp_path / "gpu.json").read_text())
    assert written["runs"] == report["runs"]
    table = (tmp_path / "gpu.md").read_text()
    assert "| lora_bf16_packed | tiny | 6 |" in table and "skipped: QLoRA" in table
