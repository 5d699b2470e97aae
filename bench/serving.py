"""Serving: `/v1/chat/completions` (what the playground streams from) on SmolLM2-135M-Instruct with LoRA
adapters, through the web app and Refinery's inference process, streamed, greedy, on the CPU.

Scenarios, each a series of requests one after another after a warm-up that loads every adapter once:

- base: the base model alone (the adapters switched off);
- one adapter: every request to the same adapter (the baseline of the switching scenario);
- switching: requests cycling through four adapters of the same base (a `set_adapter` per request).

For each: time to first token (request sent to the first content chunk) and decode tokens per second
(content chunks after the first, over the time after the first), p50 and p95; and the cost of the first
request to an adapter that is not loaded yet (its load).

    .venv/bin/python bench/serving.py [--requests 12 --max-tokens 64]

Writes bench/results/serving.json and .md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.stack import RESULTS, Stack, _wait, percentiles, stack  # noqa: E402

PROMPTS = [
    "Give three tips for staying healthy.",
    "Explain what a neural network is in two sentences.",
    "Write a haiku about autumn.",
    "What is the capital of France, and why is it famous?",
]


def bundled_model(s: Stack) -> str:
    refinery = shutil.which("refinery", path=str(Path(sys.executable).parent)) or "refinery"
    subprocess.run([refinery, "models", "import-bundled"], cwd=ROOT, env=s.env, check=True, capture_output=True)
    with s.api() as api:

        def ready() -> str | None:
            models = [m for m in api.get("/api/v1/models").json() if m["status"] == "ready"]
            return models[0]["id"] if models else None

        return str(_wait(ready, 600, "the bundled SmolLM2 import", interval=2))


def adapters(s: Stack, model_id: str, count: int) -> list[str]:
    """``count`` LoRA adapters of the model, each trained for two steps on a few records."""
    with s.api() as api:
        rows = [
            {"messages": [{"role": "user", "content": p}, {"role": "assistant", "content": f"Answer {i}: {p}"}]}
            for i, p in enumerate(PROMPTS * 4)
        ]
        dataset = api.post(
            "/api/v1/datasets", files={"file": ("chat.jsonl", "\n".join(json.dumps(r) for r in rows).encode())}
        ).json()

        def version() -> str | None:
            versions = api.get(f"/api/v1/datasets/{dataset['id']}").json()["versions"]
            return versions[0]["id"] if versions else None

        version_id = _wait(version, 300, "the dataset's validation")
        jobs = []
        for index in range(count):
            spec = {"max_steps": 2, "batch_size": 2, "eval_steps": 0, "save_steps": 10, "max_seq_length": 128}
            spec["lora_r"] = 8 + 4 * index  # four different adapters
            body = {"model_id": model_id, "dataset_version_id": version_id, "spec": spec, "name": f"adapter-{index}"}
            made = api.post("/api/v1/jobs", json=body)
            assert made.status_code == 201, made.text
            jobs.append(made.json()["id"])

        def all_trained() -> bool:
            return all(api.get(f"/api/v1/jobs/{j}").json()["run"]["status"] == "succeeded" for j in jobs)

        _wait(all_trained, 900, "the adapters' training", interval=2)
    return [f"job-{j}" for j in jobs]


def chat(api: httpx.Client, model: str, prompt: str, max_tokens: int) -> dict[str, float]:
    body = {
        "model": model,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    sent = time.monotonic()
    first = 0.0
    tokens = 0
    with api.stream("POST", "/v1/chat/completions", json=body) as response:
        assert response.status_code == 200, response.read()[:300]
        for line in response.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if chunk.get("usage"):  # the generated tokens, counted by the server (chunks are whole words)
                tokens = chunk["usage"]["completion_tokens"]
            if chunk["choices"] and chunk["choices"][0]["delta"].get("content") and not first:
                first = time.monotonic()
    end = time.monotonic()
    decode = (tokens - 1) / (end - first) if tokens > 1 and end > first else 0.0
    return {"ttft": first - sent if first else end - sent, "tokens": tokens, "decode_tps": decode}


def series(api: httpx.Client, models: list[str], requests: int, max_tokens: int) -> dict[str, Any]:
    runs = [chat(api, models[i % len(models)], PROMPTS[i % len(PROMPTS)], max_tokens) for i in range(requests)]
    ttft = percentiles([r["ttft"] for r in runs])
    speeds = sorted(r["decode_tps"] for r in runs)
    return {
        "requests": requests,
        "ttft": ttft,
        "decode_tokens_per_second": {
            "p50": round(statistics.median(speeds), 1),
            "p5": round(speeds[max(0, int(0.05 * (len(speeds) - 1)))], 1),
        },
        "tokens_per_request": round(statistics.mean(r["tokens"] for r in runs), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=12)
    parser.add_argument("--max-tokens", type=int, default=64)
    args = parser.parse_args()
    folder = ROOT / "bench" / ".cache" / "serving"
    with stack(folder / "data", inference=True) as s:
        model_id = bundled_model(s)
        names = adapters(s, model_id, 4)
        with s.api() as api:
            cold = [chat(api, name, PROMPTS[0], 8)["ttft"] for name in names]  # loads each adapter once
            chat(api, f"base-{model_id}", PROMPTS[0], 8)
            result = {
                "model": "SmolLM2-135M-Instruct (bundled GGUF, converted), LoRA adapters, greedy, CPU",
                "max_tokens": args.max_tokens,
                "first_request_to_an_unloaded_adapter_ttft_ms": percentiles(cold),
                "base": series(api, [f"base-{model_id}"], args.requests, args.max_tokens),
                "one_adapter": series(api, names[:1], args.requests, args.max_tokens),
                "switching_four": series(api, names, args.requests, args.max_tokens),
            }
    one, four = result["one_adapter"], result["switching_four"]
    result["switching_vs_one"] = {
        "ttft_p50": round(four["ttft"]["p50_ms"] / max(1e-9, one["ttft"]["p50_ms"]), 2),
        "decode_tps_p50": round(
            four["decode_tokens_per_second"]["p50"] / max(1e-9, one["decode_tokens_per_second"]["p50"]), 2
        ),
    }
    result["machine"] = {"cpu_count": os.cpu_count(), "platform": platform.platform()}
    print(json.dumps(result, indent=2))
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "serving.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        "# Serving: /v1/chat/completions, streamed",
        "",
        f"{result['model']}; {args.requests} requests a scenario, at most {args.max_tokens} new tokens; "
        f"{os.cpu_count()} CPUs. Command: `.venv/bin/python bench/serving.py`.",
        "",
        "| scenario | TTFT p50 ms | TTFT p95 ms | decode tokens/s p50 | tokens a request |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for label, key in (
        ("base model", "base"),
        ("one adapter (baseline)", "one_adapter"),
        ("switching 4 adapters", "switching_four"),
    ):
        row = result[key]
        lines.append(
            f"| {label} | {row['ttft']['p50_ms']} | {row['ttft']['p95_ms']} | "
            f"{row['decode_tokens_per_second']['p50']} | {row['tokens_per_request']} |"
        )
    ratio = result["switching_vs_one"]
    cold_row = result["first_request_to_an_unloaded_adapter_ttft_ms"]
    lines += [
        "",
        f"Switching between four adapters against one: TTFT ×{ratio['ttft_p50']}, decode tokens/s ×"
        f"{ratio['decode_tps_p50']}. The first request to an adapter not yet loaded: TTFT p50 "
        f"{cold_row['p50_ms']} ms (the load).",
        "",
    ]
    (RESULTS / "serving.md").write_text("\n".join(lines))


if __name__ == "__main__":
    main()
