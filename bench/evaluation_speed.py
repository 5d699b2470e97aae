"""Evaluation speed: the report that follows a job, on SmolLM2-135M-Instruct with a LoRA trained here by the
CPU quick preset (4 steps), on Alpaca records, with the default options (20 prompts answered by the base
model, the base model shown three examples and the tuned model, at most 96 new tokens; loss on 100 test
records; the 40-task forgetting probe), on this machine's CPU cores.

- **baseline**: the evaluation as a plain script does it, and as Refinery did it before this benchmark: each
  record's loss in its own forward pass, each model's answers in batches of 8 prompts, model by model;
- **Refinery, first evaluation**: the evaluation child (`worker/evaluation/evaluate.py`): answers generated in
  passes as large as a key/value-cache budget allows, the base model's plain and few-shot answers in the same
  passes, losses scored several records a pass;
- **Refinery, next evaluation of the same data**: the same child again, now finding the base model's losses
  and answers from the first run in its cache (what every later job trained on the same version gets).

Each is the same work on the same records, checked: the losses agree to 1e-4 and the answers are compared.

    .venv/bin/python bench/evaluation_speed.py

Writes bench/results/evaluation.json and .md.
"""

from __future__ import annotations

import json
import math
import platform
import random
import shutil
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from training_throughput import CACHE, chat, prepare_model  # noqa: E402

from worker.evaluation import evaluate  # noqa: E402

RESULTS = ROOT / "bench" / "results"
WORK = CACHE / "evaluation"
OPTIONS = {"sample_size": 20, "max_new_tokens": 96, "loss_records": 100, "probe_size": 40, "few_shot": 3, "seed": 42}


def prepare(model_dir: Path) -> dict[str, Any]:
    """The dataset version (Alpaca: 5 % test) and the quick preset's adapter, trained by the training child."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from app.datasets.records import record_schema
    from worker.training import train

    rows = json.loads((ROOT / "tests" / "fixtures" / "datasets" / "alpaca_5000.json").read_text())[:1200]
    records = WORK / "alpaca.parquet"
    table = [
        {
            "id": str(i),
            "line": i,
            "kind": "chat",
            "split": "test" if i % 20 == 0 else "train",
            "file": "",
            "data": json.dumps(chat(r)),
        }
        for i, r in enumerate(rows)
    ]
    pq.write_table(pa.Table.from_pylist(table, schema=record_schema()), str(records))
    template = (model_dir / "chat_template.jinja").read_text()
    adapter = WORK / "adapter"
    if not (adapter / "final" / "adapter_config.json").is_file():
        import worker.protocol as protocol

        protocol.progress = lambda *a, **k: None
        spec = {"max_steps": 4, "batch_size": 2, "max_seq_length": 128, "eval_steps": 0, "save_steps": 1000}
        train.run(
            {
                "spec": spec,
                "model_dir": str(model_dir),
                "chat_template": template,
                "records_path": str(records),
                "output_dir": str(adapter / "checkpoints"),
                "final_dir": str(adapter / "final"),
                "metrics_path": str(adapter / "metrics.jsonl"),
                "reward": None,
            }
        )
    return {
        "options": {**OPTIONS, "max_length": 1024},
        "model_dir": str(model_dir),
        "chat_template": template,
        "adapter_dir": str(adapter / "final"),
        "records_path": str(records),
        "train_records_path": str(records),
        "probe_path": str(ROOT / "app" / "evaluation" / "probe.jsonl"),
        "output_dir": str(WORK / "out"),
        "base_cache_dir": str(WORK / "cache"),
    }


def baseline(job: dict[str, Any]) -> dict[str, Any]:
    """The plain evaluation: the same records, prompts and models; one forward pass per scored record and
    batches of 8 prompts, model by model."""
    from worker.training.data import read_records

    options = job["options"]
    test = evaluate.conversations(read_records(Path(job["records_path"]), split="test", kinds={"chat"}))
    random.Random(options["seed"]).shuffle(test)  # noqa: S311
    train = evaluate.conversations(read_records(Path(job["train_records_path"]), split="train", kinds={"chat"}))
    models = evaluate.Models(job)
    loss_records = test[: options["loss_records"]]
    probe = evaluate.conversations(
        [{"kind": "chat", **json.loads(line)} for line in Path(job["probe_path"]).read_text().splitlines() if line]
    )[: options["probe_size"]]
    losses: dict[str, list[tuple[float, int]]] = {}
    for variant in ("base", "tuned"):
        with models.use(variant) as model:
            losses[variant] = [
                models.answer_losses(model, [models.encode_answer(r["prompt"], r["reference"], 1024)])[0]
                for r in loss_records + probe
            ]
    sample = test[: options["sample_size"]]
    examples = train[: options["few_shot"]]
    prompts = {
        "base": [r["prompt"] for r in sample],
        "few_shot": [evaluate.with_examples(r["prompt"], examples) for r in sample],
        "tuned": [r["prompt"] for r in sample],
    }
    answers: dict[str, list[str]] = {}
    for variant in evaluate.VARIANTS:
        with models.use(variant) as model:
            answers[variant] = []
            for start in range(0, len(sample), 8):
                batch = prompts[variant][start : start + 8]
                answers[variant] += models.generate(model, batch, options["max_new_tokens"])

    def mean(pairs: list[tuple[float, int]]) -> float:
        return sum(n for n, _c in pairs) / max(1, sum(c for _n, c in pairs))

    count = len(loss_records)
    return {
        "loss": {v: mean(losses[v][:count]) for v in losses},
        "probe": {v: mean(losses[v][count:]) for v in losses},
        "answers": answers,
    }


def refinery(job: dict[str, Any]) -> dict[str, Any]:
    import worker.protocol as protocol

    evaluate.progress = protocol.progress = lambda *a, **k: None
    summary = evaluate.run(job)
    rows = [json.loads(line) for line in (Path(job["output_dir"]) / "samples.jsonl").read_text().splitlines()]
    answers = {v: [row[v]["output"] for row in rows] for v in evaluate.VARIANTS}
    return {"loss": summary["loss"], "probe": summary["probe"]["loss"], "answers": answers}


def timed(name: str, work: Any) -> tuple[float, dict[str, Any]]:
    started = time.perf_counter()
    out = work()
    seconds = time.perf_counter() - started
    print(f"{name}: {seconds:.1f} s", flush=True)
    return seconds, out


def main() -> None:
    import torch

    WORK.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(WORK / "cache", ignore_errors=True)
    job = prepare(prepare_model())
    base_seconds, plain = timed("baseline", lambda: baseline(job))
    first_seconds, first = timed("Refinery, first evaluation", lambda: refinery(job))
    next_seconds, again = timed("Refinery, next evaluation (base cached)", lambda: refinery(job))
    for run in (first, again):
        for part in ("loss", "probe"):
            for variant in ("base", "tuned"):
                assert math.isclose(run[part][variant], plain[part][variant], rel_tol=1e-4), (part, variant)
    same = {
        v: sum(a == b for a, b in zip(first["answers"][v], plain["answers"][v], strict=True)) for v in plain["answers"]
    }
    assert again["answers"] == first["answers"]
    result = {
        "machine": {"cpu_threads": torch.get_num_threads(), "python": platform.python_version()},
        "options": OPTIONS,
        "seconds": {
            "baseline": round(base_seconds, 1),
            "refinery_first": round(first_seconds, 1),
            "refinery_next": round(next_seconds, 1),
        },
        "speedup": {
            "first": round(base_seconds / first_seconds, 2),
            "next": round(base_seconds / next_seconds, 2),
        },
        "identical_answers_of_20": same,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "evaluation.json").write_text(json.dumps(result, indent=2) + "\n")
    table = [
        "# Evaluation speed",
        "",
        "SmolLM2-135M-Instruct + the CPU quick preset's LoRA, Alpaca, default options, "
        f"{result['machine']['cpu_threads']} CPU threads (`bench/evaluation_speed.py`).",
        "",
        "| run | seconds | × baseline |",
        "|---|---:|---:|",
        f"| baseline (one record a pass, 8 prompts a batch, model by model) | {result['seconds']['baseline']} | 1.00 |",
        f"| Refinery, first evaluation | {result['seconds']['refinery_first']} | {result['speedup']['first']} |",
        f"| Refinery, next evaluation of the same data | {result['seconds']['refinery_next']} "
        f"| {result['speedup']['next']} |",
        "",
        f"Losses equal to 1e-4; greedy answers identical to the baseline's, of 20 each: {same}.",
    ]
    (RESULTS / "evaluation.md").write_text("\n".join(table) + "\n")
    print("\n".join(table))


if __name__ == "__main__":
    main()
