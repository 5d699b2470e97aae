"""Memory estimate accuracy: the estimate the training form computes (``app/jobs/estimate.py``) against the
peak memory measured when Refinery trains that configuration, and against the published 7B figures.

Each configuration trains SmolLM2-135M-Instruct for 3 steps through the real training child on records whose
rendered length is the configuration's sequence length, in its own process; its peak RSS is measured, and so
is the RSS of the libraries alone (the same imports, no model). The CPU estimate's one measured constant
(``CPU_ACTIVATION_VALUES``) was fitted to the four ``fitted`` configurations (supervised LoRA); the ``held out``
ones — DPO, full fine-tuning, IA3, prefix tuning and a 2,048-token sequence — were not used to fit anything
and score the estimate on what it was not shown. ``--report-only`` recomputes the estimates for the
measurements on record (after changing the estimate). No GPU was lent for these runs, so the GPU estimate is
checked against the published figures here and on a GPU by bench/gpu.py.

    .venv/bin/python bench/memory_estimate.py

Writes bench/results/memory_estimate.json and .md.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
CACHE = ROOT / "bench" / ".cache"
# (name, spec fields, fitted): the four the CPU constant was fitted to (256, 512, 1,024 and, in passes of 2, 1,024
# tokens a pass), then the held-out ones
CONFIGS: list[tuple[str, dict[str, Any], bool]] = [
    ("lora 2 × 128", {"batch_size": 2, "max_seq_length": 128}, True),
    ("lora 4 × 128", {"batch_size": 4, "max_seq_length": 128}, True),
    ("lora 8 × 128", {"batch_size": 8, "max_seq_length": 128}, True),
    ("lora 8 × 512", {"batch_size": 8, "max_seq_length": 512}, True),
    ("lora 1 × 2048", {"batch_size": 1, "max_seq_length": 2048}, False),
    ("dpo lora 2 × 256", {"method": "dpo", "batch_size": 2, "max_seq_length": 256}, False),
    ("full 2 × 128", {"adapter": "full", "batch_size": 2, "max_seq_length": 128}, False),
    ("ia3 4 × 256", {"adapter": "ia3", "batch_size": 4, "max_seq_length": 256}, False),
    ("prefix tuning 4 × 128", {"adapter": "prefix_tuning", "batch_size": 4, "max_seq_length": 128}, False),
]
# published peak memory for a 7B Llama (GB): LoRA in 16-bit, QLoRA 4-bit, full fine-tuning with AdamW
PUBLISHED_7B = {"lora": (14, 18), "qlora": (5, 8), "full": (80, 120)}


def records(path: Path, renderer: Any, length: int, count: int, kind: str = "chat") -> None:
    """``count`` chat records whose rendered conversation is ``length`` tokens (give or take one), or preference
    pairs whose chosen and rejected conversations are each that long."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from app.datasets.records import record_schema

    def conversation(words: int) -> dict[str, Any]:
        return {
            "messages": [
                {"role": "user", "content": "Repeat the word."},
                {"role": "assistant", "content": " ".join(["river"] * words)},
            ]
        }

    words = 1
    while renderer.count(renderer.render(conversation(words + 1)["messages"])) <= length:
        words += 1
    chat = conversation(words)
    if kind == "preference":
        rejected = [chat["messages"][1] | {"content": " ".join(["stone"] * words)}]
        chat = {"prompt": chat["messages"][:1], "chosen": chat["messages"][1:], "rejected": rejected}
    data = json.dumps(chat)
    schema = record_schema()
    rows = [
        {"id": str(n), "line": n, "kind": kind, "split": "train", "file": "", "data": data} for n in range(1, count + 1)
    ]
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), str(path))


def child(fields: dict[str, Any]) -> None:
    sys.path.insert(0, str(ROOT / "bench"))
    import datasets  # noqa: F401
    import peft  # noqa: F401
    import torch  # noqa: F401
    import transformers  # noqa: F401
    import trl  # noqa: F401

    libraries = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    from training_throughput import prepare_model, template

    from worker.training.train import run

    model_dir = prepare_model()
    chat_template, renderer = template(model_dir)
    batch, length = fields["batch_size"], fields["max_seq_length"]
    work = CACHE / f"mem-{abs(hash(json.dumps(fields, sort_keys=True)))}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    kind = "preference" if fields.get("method") == "dpo" else "chat"
    records(work / "records.parquet", renderer, length, batch * 3, kind)
    spec = {**fields, "max_steps": 3, "eval_steps": 0, "save_steps": 1000}
    run(
        {
            "spec": spec,
            "model_dir": str(model_dir),
            "chat_template": chat_template,
            "records_path": str(work / "records.parquet"),
            "output_dir": str(work / "out"),
            "final_dir": str(work / "final"),
            "metrics_path": str(work / "metrics.jsonl"),
        }
    )
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("RESULT " + json.dumps({"libraries_mb": round(libraries), "peak_mb": round(peak)}), flush=True)


def estimates(fields: dict[str, Any], model_dir: Path) -> dict[str, int]:
    from app.jobs.estimate import GIB, ModelShape, cpu_pass_size, estimate_memory
    from app.jobs.spec import TrainingSpec

    config = json.loads((model_dir / "config.json").read_text())
    parameters = 134_515_008  # SmolLM2-135M
    shape = ModelShape(
        parameters=parameters,
        hidden_size=config["hidden_size"],
        layers=config["num_hidden_layers"],
        vocab_size=config["vocab_size"],
        intermediate_size=config["intermediate_size"],
    )
    spec = TrainingSpec.model_validate(fields)
    cpu = estimate_memory(spec, shape, gpu=False)
    batch, length = spec.batch_size, spec.max_seq_length
    return {
        "pass_tokens": (cpu_pass_size(batch, length) if spec.method.value in ("sft", "cpt") else batch) * length,
        "cpu_estimate_mb": round(cpu.total / GIB * 1024),
        "gpu_estimate_mb": round(estimate_memory(spec, shape).total / GIB * 1024),
    }


def published() -> list[dict[str, Any]]:
    from app.jobs.estimate import ModelShape, estimate_memory
    from app.jobs.spec import TrainingSpec

    llama = ModelShape(parameters=6_738_415_616, hidden_size=4096, layers=32, vocab_size=32000, intermediate_size=11008)
    out = []
    for adapter, (low, high) in PUBLISHED_7B.items():
        spec = TrainingSpec.model_validate({"adapter": adapter, "batch_size": 1, "max_seq_length": 512})
        total = estimate_memory(spec, llama).total / 1e9
        out.append({"adapter": adapter, "estimate_gb": round(total, 1), "published_gb": [low, high]})
    return out


def report(measured: list[dict[str, Any]], model_dir: Path) -> None:
    rows = []
    for m in measured:
        row = {k: m[k] for k in ("name", "fields", "fitted", "libraries_mb", "peak_mb")}
        row |= estimates(row["fields"], model_dir)
        row["ratio"] = round(row["cpu_estimate_mb"] / row["peak_mb"], 2)
        rows.append(row)
    held_out = [abs(r["ratio"] - 1) for r in rows if not r["fitted"]]
    result = {
        "cpu": rows,
        "held_out_mean_abs_error": round(sum(held_out) / len(held_out), 3) if held_out else None,
        "held_out_worst_abs_error": round(max(held_out), 3) if held_out else None,
        "published_7b": published(),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "memory_estimate.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        "| configuration | used to fit | tokens a pass | CPU estimate (MB) | measured peak (MB) | of which libraries "
        "| estimate / measured |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['name']} | {'fitted' if r['fitted'] else 'held out'} | {r['pass_tokens']:,} | "
            f"{r['cpu_estimate_mb']:,} | {r['peak_mb']:,} | {r['libraries_mb']:,} | {r['ratio']:.2f} |"
        )
    if held_out:
        lines += [
            "",
            f"Held-out configurations: mean |estimate / measured − 1| = {result['held_out_mean_abs_error']:.1%}, "
            f"worst {result['held_out_worst_abs_error']:.1%}.",
        ]
    lines += ["", "| 7B Llama, batch 1 × 512, 16-bit | estimate (GB) | published (GB) |", "|---|---:|---:|"]
    for p in result["published_7b"]:
        lines.append(f"| {p['adapter']} | {p['estimate_gb']} | {p['published_gb'][0]}–{p['published_gb'][1]} |")
    (RESULTS / "memory_estimate.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--only", nargs="+", help="measure only these configurations (by name); keep the rest")
    parser.add_argument(
        "--report-only", action="store_true", help="recompute the estimates for the measurements on record"
    )
    args = parser.parse_args()
    if args.child:
        child(json.loads(args.child))
        return
    sys.path.insert(0, str(ROOT / "bench"))
    from training_throughput import prepare_model

    model_dir = prepare_model()
    if args.report_only:
        report(json.loads((RESULTS / "memory_estimate.json").read_text())["cpu"], model_dir)
        return
    on_record = {}
    if args.only and (RESULTS / "memory_estimate.json").is_file():
        on_record = {r["name"]: r for r in json.loads((RESULTS / "memory_estimate.json").read_text())["cpu"]}
    measured = []
    for name, fields, fitted in CONFIGS:
        if args.only and name not in args.only and name in on_record:
            measured.append(on_record[name])
            continue
        argv = [sys.executable, __file__, "--child", json.dumps(fields)]
        done = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT, check=False)
        line = next((x for x in done.stdout.splitlines() if x.startswith("RESULT ")), None)
        if line is None:
            raise SystemExit(f"{name} failed:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}")
        measured.append({"name": name, "fields": fields, "fitted": fitted, **json.loads(line[len("RESULT ") :])})
        print(json.dumps(measured[-1]), flush=True)
    report(measured, model_dir)


if __name__ == "__main__":
    main()
