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

import hashlib
import json
import math
import os
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
LOSS_TOKENS_PER_PASS = 2048  # tokens scored in one forward pass (padding included)
GENERATION_TOKENS = 24_576  # rows × (prompt + new tokens) in one generation pass: its key/value cache


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

    def encode_answer(self, prompt: list[dict[str, str]], answer: str, max_length: int) -> tuple[list[int], int]:
        """The conversation's token ids (cut at ``max_length``) and where the answer's tokens start."""
        context = self.tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=False)
        full = self.tokenizer.apply_chat_template([*prompt, {"role": "assistant", "content": answer}], tokenize=False)
        context_ids = self.tokenizer(context, add_special_tokens=False)["input_ids"]
        ids = self.tokenizer(full, add_special_tokens=False)["input_ids"][:max_length]
        return ids, min(len(context_ids), len(ids) - 1)

    def answer_losses(
        self, model: Any, encoded: list[tuple[list[int], int]], tokens_per_pass: int = LOSS_TOKENS_PER_PASS
    ) -> list[tuple[float, int]]:
        """Summed negative log-likelihood of each answer's tokens after its prompt, and their count. Several
        conversations go through the model in one pass (right-padded, similar lengths together, up to
        ``tokens_per_pass`` tokens): the same numbers as one at a time, in far fewer passes."""
        torch = self.torch
        results: list[tuple[float, int]] = [(0.0, 0)] * len(encoded)
        usable = [i for i, (ids, start) in enumerate(encoded) if len(ids) >= 2 and start < len(ids)]
        order = sorted(usable, key=lambda i: len(encoded[i][0]))
        pad = self.tokenizer.pad_token_id or 0
        batch: list[int] = []
        for position, index in enumerate(order):
            batch.append(index)
            longest = len(encoded[index][0])
            following = order[position + 1] if position + 1 < len(order) else None
            if following is not None and (len(batch) + 1) * len(encoded[following][0]) <= tokens_per_pass:
                continue
            width = max(longest, 2)
            ids = torch.full((len(batch), width), pad, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for row, item in enumerate(batch):
                tokens = encoded[item][0]
                ids[row, : len(tokens)] = torch.tensor(tokens)
                mask[row, : len(tokens)] = 1
            ids, mask = ids.to(self.device), mask.to(self.device)
            with torch.no_grad():
                logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1]
                losses = torch.nn.functional.cross_entropy(logits.float().transpose(1, 2), ids[:, 1:], reduction="none")
            for row, item in enumerate(batch):
                tokens, start = encoded[item]
                part = losses[row, max(start - 1, 0) : len(tokens) - 1]
                results[item] = (float(part.sum()), int(part.numel()))
            batch = []
        return results

    def batches(
        self,
        rows: list[tuple[str, int]],
        prompts: dict[str, list[list[dict[str, str]]]],
        max_new_tokens: int,
        budget: int,
    ) -> list[list[tuple[str, int]]]:
        """Rows (variant, prompt index) grouped into generation passes: similar prompt lengths together, as
        many per pass as fit ``budget`` tokens of cache (rows × (longest prompt + new tokens)). Bigger passes
        mean fewer decoding steps in all, which is where the time goes."""

        def tokens(messages: list[dict[str, str]]) -> int:
            text = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
            return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

        length = {row: tokens(prompts[row[0]][row[1]]) for row in rows}
        found: list[list[tuple[str, int]]] = []
        current: list[tuple[str, int]] = []
        for row in sorted(rows, key=lambda r: length[r]):
            if current and (len(current) + 1) * (length[row] + max_new_tokens) > budget:
                found.append(current)
                current = []
            current.append(row)
        return [*found, current] if current else found

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


class BaseCache:
    """What the base model computed in earlier evaluations — each test record's loss, each prompt's greedy
    answer (plain and few-shot) — kept beside it, so that evaluating another job on the same data computes
    only the tuned model's part: every job trained on a version is compared with the same base numbers.
    Greedy answers and losses are deterministic; an entry's key holds everything its value depends on (the
    chat template, the length limits, the messages)."""

    MOST = 50_000  # entries kept per base model and template (the oldest go first)

    def __init__(self, job: dict[str, Any]) -> None:
        self.path: Path | None = None
        self.entries: dict[str, Any] = {}
        self.template = job.get("chat_template") or ""
        self.vocabulary = 0  # the tokenizer's size, set once it is loaded
        folder = job.get("base_cache_dir")
        if not folder:
            return
        self.path = Path(folder) / f"{hashlib.sha256(self.template.encode()).hexdigest()[:16]}.json"
        try:
            loaded = json.loads(self.path.read_text())
            self.entries = loaded if isinstance(loaded, dict) else {}
        except (OSError, ValueError):
            self.entries = {}

    def key(self, *parts: Any) -> str:
        # the tokenizer comes with the adapter: one with other tokens is another base for these numbers
        return hashlib.sha256(
            json.dumps([self.vocabulary, *parts], sort_keys=True, ensure_ascii=False).encode()
        ).hexdigest()[:32]

    def get(self, key: str) -> Any:
        return self.entries.get(key)

    def put(self, values: dict[str, Any]) -> None:
        self.entries.update(values)
        if self.path is None or not values:
            return
        if len(self.entries) > self.MOST:
            self.entries = dict(list(self.entries.items())[-self.MOST :])
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            partial = self.path.with_name(f"{self.path.name}.{os.getpid()}.partial")
            partial.write_text(json.dumps(self.entries, ensure_ascii=False))
            partial.replace(self.path)
        except OSError:  # a full disk: the next evaluation computes them again
            pass


def mean_loss(
    models: Models, cache: BaseCache, variant: str, records: list[dict[str, Any]], max_length: int
) -> float | None:
    """A model's mean loss per answer token over the records' answers; the base model's per-record losses come
    from the cache where an earlier evaluation computed them (and go into it otherwise)."""
    keys = [cache.key("loss", max_length, r["prompt"], r["reference"]) for r in records]
    missing = [i for i, key in enumerate(keys) if variant != "base" or cache.get(key) is None]
    found: dict[int, Any] = {}
    if missing:
        encoded = [models.encode_answer(records[i]["prompt"], records[i]["reference"], max_length) for i in missing]
        with models.use(variant) as model:
            found = dict(zip(missing, models.answer_losses(model, encoded), strict=True))
        if variant == "base":
            cache.put({keys[i]: list(value) for i, value in found.items()})
    losses = [found[i] if i in found else cache.get(key) for i, key in enumerate(keys)]
    count = sum(int(c) for _n, c in losses)
    return sum(float(n) for n, _c in losses) / count if count else None


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
    cache = BaseCache(job)
    cache.vocabulary = len(models.tokenizer)
    loss: dict[str, float | None] = {}
    for n, variant in enumerate(("base", "tuned")):
        loss[variant] = mean_loss(models, cache, variant, loss_records, max_length)
        steps = 2 * len(loss_records)
        progress(0.05 + 0.25 * (n + 1) / 2, "eval_loss", done=(n + 1) * len(loss_records), total=steps)

    # 2. generations, scored: the base model writes its plain and few-shot answers in the same passes (or they
    # come from the cache of an earlier evaluation of the same data), then the tuned model writes its own
    sample = test[: int(options.get("sample_size", 20))]
    examples = train[: int(options.get("few_shot", 3))]
    prompts = {
        "base": [r["prompt"] for r in sample],
        "few_shot": [with_examples(r["prompt"], examples) for r in sample],
        "tuned": [r["prompt"] for r in sample],
    }
    max_new = int(options.get("max_new_tokens", 96))
    wanted = [v for v in VARIANTS if v != "few_shot" or examples]
    outputs: dict[str, list[str]] = {v: [] for v in VARIANTS}
    for v in ("base", "few_shot"):  # the base model's answers from earlier evaluations of the same prompts
        if v in wanted:
            known = [cache.get(cache.key("answer", max_new, p)) for p in prompts[v][: len(sample)]]
            if all(isinstance(text, str) for text in known):
                outputs[v] = [str(text) for text in known]
    groups = [
        (model_variant, [(v, i) for v in wanted if v in variants and not outputs[v] for i in range(len(sample))])
        for model_variant, variants in (("base", ("base", "few_shot")), ("tuned", ("tuned",)))
    ]
    budget = int(options.get("generation_tokens", GENERATION_TOKENS))
    plans = {name: models.batches(rows, prompts, max_new, budget) for name, rows in groups}
    total_batches = max(1, sum(len(batches) for batches in plans.values()))
    finished = 0
    for model_variant, batches in plans.items():
        if not batches:
            continue
        answers: dict[str, dict[int, str]] = {v: {} for v in VARIANTS}
        with models.use(model_variant) as model:
            for rows in batches:
                texts = models.generate(model, [prompts[v][i] for v, i in rows], max_new)
                for (v, i), text in zip(rows, texts, strict=True):
                    answers[v][i] = text
                finished += 1
                progress(0.3 + 0.5 * finished / total_batches, "generating", done=finished, total=total_batches)
        for v, by_index in answers.items():
            if by_index:
                outputs[v] = [by_index[i] for i in range(len(sample))]
    cache.put(
        {
            cache.key("answer", max_new, prompts[v][i]): outputs[v][i]
            for v in ("base", "few_shot")
            if outputs[v]
            for i in range(len(sample))
        }
    )
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
        probe_loss[variant] = mean_loss(models, cache, variant, probe, max_length)
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
