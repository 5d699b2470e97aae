"""Child process: evaluate a trained job's model against its base model.

1. loss and perplexity of base and tuned on the test records (the assistant's tokens only);
2. on a seeded sample of test prompts, greedy generations from the base model, the base model shown a few
   training examples first (few-shot: "did fine-tuning beat prompt engineering?") and the tuned model, each
   scored against the reference answer (exact match, token F1, BLEU, ROUGE-L);
3. a regression probe: the loss of general tasks' reference answers (app/evaluation/probe.jsonl) under both
   models, flagged when the tuned model is clearly worse there (forgetting);
4. contamination: test prompts whose word 8-grams mostly appear in the training prompts.

Writes ``report.json`` and ``samples.jsonl`` into the output directory and reports the summary as its result.
"""

from __future__ import annotations

import json
import math
import random
import sys
from pathlib import Path
from typing import Any

from app.graders.template import record_item
from worker.evaluation.metrics import ngrams, overlap, score
from worker.protocol import progress, run_child
from worker.training.data import DataError, read_records

VARIANTS = ("base", "few_shot", "tuned")
METRICS = ("exact_match", "f1", "bleu", "rouge_l")
FORGETTING_RATIO = 1.10  # tuned probe loss more than 10 % above the base model's
CONTAMINATION_OVERLAP = 0.5  # share of a test prompt's 8-grams found in training prompts
LOSS_RECORDS = 100  # records scored for loss and perplexity by default (the first ones of the seeded order)


def conversations(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """(prompt messages, reference answer, grader item) from chat records (up to the last assistant turn),
    preference pairs (the prompt and the chosen answer) and reinforcement prompts (no reference: only graders
    score their answers)."""
    out = []
    for record in records:
        if record["kind"] == "preference":
            prompt = list(record["prompt"])
            answer = record["chosen"][-1]["content"] if record["chosen"] else ""
        elif record["kind"] == "prompt":
            prompt, answer = list(record["messages"]), ""
        else:
            messages = record["messages"]
            last = max((i for i, m in enumerate(messages) if m["role"] == "assistant"), default=-1)
            if last < 1:
                continue
            prompt, answer = messages[:last], messages[last]["content"]
        prompt = [{"role": m["role"], "content": m["content"]} for m in prompt]
        if prompt and (answer.strip() or record["kind"] == "prompt"):
            item = record_item(record, answer)
            out.append({"id": record["id"], "prompt": prompt, "reference": answer, "item": item})
    return out


def with_examples(prompt: list[dict[str, str]], examples: list[dict[str, Any]]) -> list[dict[str, str]]:
    """The prompt preceded by worked examples as earlier turns (after any system message)."""
    system = [m for m in prompt[:1] if m["role"] == "system"]
    shots: list[dict[str, str]] = []
    for example in examples:
        shots += [m for m in example["prompt"] if m["role"] != "system"]
        shots.append({"role": "assistant", "content": example["reference"]})
    return system + shots + prompt[len(system) :]


class Models:
    """The base and the tuned model. A PEFT adapter shares the base weights (the base is the adapter
    switched off); full or freeze fine-tuning loads a second model."""

    def __init__(self, job: dict[str, Any]) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.torch = torch
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        dtype = torch.bfloat16 if self.device == "cuda" and torch.cuda.is_bf16_supported() else torch.float32
        kwargs: dict[str, Any] = {"dtype": dtype, "use_safetensors": True, "trust_remote_code": False}
        adapter = Path(job["adapter_dir"])
        self.tokenizer = AutoTokenizer.from_pretrained(str(adapter), trust_remote_code=False)
        if job.get("chat_template"):
            self.tokenizer.chat_template = job["chat_template"]
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.tokenizer.padding_side = "left"
        base = AutoModelForCausalLM.from_pretrained(job["model_dir"], **kwargs).to(self.device).eval()
        if (adapter / "adapter_config.json").is_file():
            from peft import PeftModel

            self.tuned = PeftModel.from_pretrained(base, str(adapter)).eval()
            self.base = None
        else:
            self.tuned = AutoModelForCausalLM.from_pretrained(str(adapter), **kwargs).to(self.device).eval()
            self.base = base

    def use(self, variant: str) -> Any:
        """A context manager giving the model for a variant ("base"/"few_shot" use the base model)."""
        import contextlib

        if variant == "tuned":
            return contextlib.nullcontext(self.tuned)
        if self.base is not None:
            return contextlib.nullcontext(self.base)

        @contextlib.contextmanager
        def adapter_off() -> Any:
            with self.tuned.disable_adapter():
                yield self.tuned

        return adapter_off()

    def answer_loss(self, model: Any, prompt: list[dict[str, str]], answer: str, max_length: int) -> tuple[float, int]:
        """Summed negative log-likelihood of the answer's tokens after the prompt, and their count."""
        torch = self.torch
        context = self.tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=False)
        full = self.tokenizer.apply_chat_template([*prompt, {"role": "assistant", "content": answer}], tokenize=False)
        context_ids = self.tokenizer(context, add_special_tokens=False)["input_ids"]
        ids = self.tokenizer(full, add_special_tokens=False)["input_ids"][:max_length]
        start = min(len(context_ids), len(ids) - 1)
        if len(ids) < 2 or start >= len(ids):
            return 0.0, 0
        tensor = torch.tensor([ids], device=self.device)
        with torch.no_grad():
            logits = model(input_ids=tensor).logits[0, :-1].float()
        targets = tensor[0, 1:]
        losses = torch.nn.functional.cross_entropy(logits, targets, reduction="none")
        answer_part = losses[start - 1 :] if start > 0 else losses
        return float(answer_part.sum()), int(answer_part.numel())

    def generate(self, model: Any, prompts: list[list[dict[str, str]]], max_new_tokens: int) -> list[str]:
        torch = self.torch
        texts = [self.tokenizer.apply_chat_template(p, add_generation_prompt=True, tokenize=False) for p in prompts]
        batch = self.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(self.device)
        with torch.no_grad():
            out = model.generate(
                **batch,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=self.tokenizer.pad_token_id,
            )
        new = out[:, batch["input_ids"].shape[1] :]
        return [t.strip() for t in self.tokenizer.batch_decode(new, skip_special_tokens=True)]


def grade_samples(
    specs: list[dict[str, Any]], sample: list[dict[str, Any]], samples: list[dict[str, Any]]
) -> dict[str, Any]:
    """Every variant's answers graded by the attached graders (app/graders, as eval runs grade: a python
    grader in its sandbox, a model grader through the judges); each sample row gets its grades beside the
    answer, and the summary how many answers passed every grader, per variant, and each grader's mean."""
    from app.evaluation.evals import criterion
    from worker.evaluation.eval_run import LazyEmbedder, grade_item

    graders = [criterion(spec) for spec in specs]
    ask = None
    if any(g.type in ("score_model", "label_model", "multi") for g in graders):
        from app.db.session import session_scope
        from app.evaluation.judges import GraderJudges

        with session_scope() as session:
            ask = GraderJudges(session)
    embed = LazyEmbedder()
    variants = [v for v in VARIANTS if samples and v in samples[0]]
    totals: dict[str, dict[str, Any]] = {
        v: {"passed": 0, "errors": 0, "total": 0, "scores": {g.name: [] for g in graders}} for v in variants
    }
    done, steps = 0, max(1, len(samples) * len(variants))
    try:
        for record, row in zip(sample, samples, strict=True):
            for variant in variants:
                entry = {"item": record["item"], "sample": {"output_text": row[variant]["output"]}}
                graded = grade_item(0, entry, graders, ask, embed=embed)
                row[variant]["grades"] = graded["results"]
                total = totals[variant]
                total["total"] += 1
                total["passed"] += graded["status"] == "pass"
                total["errors"] += graded["status"] == "error"
                for result in graded["results"]:
                    total["scores"][result["name"]].append(result["score"])
                done += 1
                progress(0.8 + 0.05 * done / steps, "grading_answers", done=done, total=steps)
    finally:
        if ask is not None:
            ask.close()
    return {
        "names": [g.name for g in graders],
        "variants": {
            v: {
                "passed": t["passed"],
                "errors": t["errors"],
                "total": t["total"],
                "mean": {name: _mean(values) for name, values in t["scores"].items()},
            }
            for v, t in totals.items()
        },
    }


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def run(job: dict[str, Any]) -> dict[str, Any]:
    options = job["options"]
    rng = random.Random(options.get("seed", 42))  # noqa: S311  (reproducible sampling, not security)
    grader_specs = list(options.get("graders") or [])
    # reinforcement prompts have no reference answer: only graders can score their answers
    kinds = {"chat", "preference", "prompt"} if grader_specs else {"chat", "preference"}
    split = options.get("split", "test")
    test = conversations(read_records(Path(job["records_path"]), split=split, kinds=kinds))
    if not test:
        raise DataError("no_test_records", split=split)
    rng.shuffle(test)
    train = conversations(read_records(Path(job["train_records_path"]), split="train", kinds=kinds))
    progress(0.02, "loading_model")
    models = Models(job)
    max_length = int(options.get("max_length", 1024))

    # 1. loss and perplexity
    loss_records = [r for r in test if r["reference"]][: int(options.get("loss_records", LOSS_RECORDS))]
    totals = {"base": [0.0, 0], "tuned": [0.0, 0]}
    steps = len(loss_records) * 2
    done = 0
    for variant in ("base", "tuned"):
        with models.use(variant) as model:
            for record in loss_records:
                nll, count = models.answer_loss(model, record["prompt"], record["reference"], max_length)
                totals[variant][0] += nll
                totals[variant][1] += count
                done += 1
                if done % 10 == 0:
                    progress(0.05 + 0.25 * done / steps, "eval_loss", done=done, total=steps)
    loss = {v: (totals[v][0] / totals[v][1] if totals[v][1] else None) for v in totals}

    # 2. generations, scored
    sample = test[: int(options.get("sample_size", 20))]
    examples = train[: int(options.get("few_shot", 3))]
    prompts = {
        "base": [r["prompt"] for r in sample],
        "few_shot": [with_examples(r["prompt"], examples) for r in sample],
        "tuned": [r["prompt"] for r in sample],
    }
    outputs: dict[str, list[str]] = {v: [] for v in VARIANTS}
    batch_size = int(options.get("batch_size", 8))
    max_new = int(options.get("max_new_tokens", 96))
    total_batches = len(VARIANTS) * max(1, math.ceil(len(sample) / batch_size))
    finished = 0
    for variant in VARIANTS:
        if variant == "few_shot" and not examples:
            continue
        with models.use(variant) as model:
            for start in range(0, len(sample), batch_size):
                outputs[variant] += models.generate(model, prompts[variant][start : start + batch_size], max_new)
                finished += 1
                progress(0.3 + 0.5 * finished / total_batches, "generating", done=finished, total=total_batches)
    samples = []
    for i, record in enumerate(sample):
        row: dict[str, Any] = {"id": record["id"], "prompt": record["prompt"], "reference": record["reference"]}
        for variant in VARIANTS:
            if outputs[variant]:
                scored = score(outputs[variant][i], record["reference"]) if record["reference"] else {}
                row[variant] = {"output": outputs[variant][i], **scored}
        samples.append(row)
    scores = {
        variant: {
            metric: _mean([s[variant][metric] for s in samples if metric in s.get(variant, {})]) for metric in METRICS
        }
        for variant in VARIANTS
        if outputs[variant]
    }
    graded = grade_samples(grader_specs, sample, samples) if grader_specs else None

    # 3. forgetting probe
    probe = conversations(
        [{"kind": "chat", **json.loads(line)} for line in Path(job["probe_path"]).read_text().splitlines() if line]
    )[: int(options.get("probe_size", 40))]
    probe_loss: dict[str, float | None] = {}
    for n, variant in enumerate(("base", "tuned")):
        nll_sum, count_sum = 0.0, 0
        with models.use(variant) as model:
            for record in probe:
                nll, count = models.answer_loss(model, record["prompt"], record["reference"], max_length)
                nll_sum += nll
                count_sum += count
        probe_loss[variant] = nll_sum / count_sum if count_sum else None
        progress(0.85 + 0.05 * (n + 1), "probing")
    base_probe, tuned_probe = probe_loss.get("base"), probe_loss.get("tuned")
    forgetting = bool(base_probe and tuned_probe and tuned_probe > base_probe * FORGETTING_RATIO)

    # 4. contamination between the training prompts and the test prompts
    seen: set[tuple[str, ...]] = set()
    for record in train:
        seen |= ngrams(" ".join(m["content"] for m in record["prompt"]), 8)
    contaminated = [
        r["id"] for r in test if overlap(" ".join(m["content"] for m in r["prompt"]), seen, 8) >= CONTAMINATION_OVERLAP
    ]

    summary = {
        "test_records": len(test),
        "loss": loss,
        "perplexity": {v: (math.exp(x) if x is not None and x < 50 else None) for v, x in loss.items()},
        "scores": scores,
        "sample_size": len(sample),
        **({"graders": graded} if graded is not None else {}),
        "few_shot_examples": len(examples),
        "probe": {"records": len(probe), "loss": probe_loss, "forgetting": forgetting},
        "contamination": {"count": len(contaminated), "ids": contaminated[:50], "threshold": CONTAMINATION_OVERLAP},
    }
    output = Path(job["output_dir"])
    output.mkdir(parents=True, exist_ok=True)
    with (output / "samples.jsonl.partial").open("w") as handle:
        for row in samples:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    (output / "samples.jsonl.partial").replace(output / "samples.jsonl")
    (output / "report.json").write_text(json.dumps(summary, ensure_ascii=False))
    return summary


def main(job: dict[str, Any]) -> int:
    return run_child(run, job, error_code="evaluation_error")


if __name__ == "__main__":
    sys.exit(main(json.loads(sys.argv[1])))
