"""Cleaning quality: precision and recall of each cleaning step on the labelled set (bench/cleaning_set.py), per
step and per class, through the same Cleaner the worker runs.

* injection: recall per language and per attack category; false positives on the hard negatives (code
  tutorials, innocent "ignore", "pretend", "developer mode") and on the clean records;
* pii: recall per detector kind (the planted value is redacted); false positives on the hard negatives
  (version strings, order numbers, ISBNs, timestamps) and on the clean records;
* duplicates: recall of exact, near and paraphrased copies with the default recipe, and with semantic dedup
  added; false positives on the records that are not copies.

    .venv/bin/python bench/cleaning_quality.py        # writes bench/results/cleaning_quality.{json,md}
"""

from __future__ import annotations

import json
import platform
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from app.cleaning.ops import Cleaner  # noqa: E402
from app.cleaning.recipe import DEFAULT_RECIPE, validate_steps  # noqa: E402
from app.cleaning.text import joined  # noqa: E402
from bench.cleaning_set import Case, build  # noqa: E402

RESULTS = ROOT / "bench" / "results"


def as_messages(record: dict[str, str]) -> dict[str, Any]:
    """An Alpaca record as the importer stores it: one user turn (instruction, then input) and the answer."""
    prompt = "\n\n".join(part for part in (record["instruction"], record["input"]) if part)
    return {"messages": [{"role": "user", "content": prompt}, {"role": "assistant", "content": record["output"]}]}


def run(cases: list[Case], steps: list[dict[str, Any]], embed: Any = None) -> list[list[dict[str, Any]]]:
    """Each case's decisions (op, action, reason, evidence) under the recipe, records in file order."""
    cleaner = Cleaner(validate_steps(steps), embed=embed)
    out: list[list[dict[str, Any]]] = []
    records = [(str(k), "sft", as_messages(c.record)) for k, c in enumerate(cases)]
    for start in range(0, len(records), 500):
        for outcome in cleaner.process_many(records[start : start + 500]):
            out.append(
                [
                    {"op": d.op, "action": d.action, "reason": d.reason, "evidence": d.evidence}
                    for d in outcome.decisions
                ]
            )
    return out


def _rate(hits: int, total: int) -> dict[str, Any]:
    return {"hits": hits, "total": total, "rate": round(hits / total, 4) if total else None}


def injection_quality(cases: list[Case], params: dict[str, Any] | None = None) -> dict[str, Any]:
    decisions = run(cases, [{"op": "injection", "params": params or {}}])
    flagged = [any(d["op"] == "injection" for d in ds) for ds in decisions]
    recall: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for case, hit in zip(cases, flagged, strict=True):
        if case.cls == "injection":
            for key in (case.lang, f"{case.lang}/{case.detail}"):
                recall[key][0] += hit
                recall[key][1] += 1
    negatives = {
        f"hard_negative/{lang}": [
            hit for c, hit in zip(cases, flagged, strict=True) if c.cls == "hard_negative" and c.lang == lang
        ]
        for lang in ("en", "zh")
    }
    negatives["clean"] = [hit for c, hit in zip(cases, flagged, strict=True) if c.cls in ("clean", "duplicate")]
    return {
        "recall": {k: _rate(*v) for k, v in sorted(recall.items())},
        "false_positives": {k: _rate(sum(v), len(v)) for k, v in negatives.items()},
        "missed": [
            c.record["instruction"] for c, hit in zip(cases, flagged, strict=True) if c.cls == "injection" and not hit
        ],
        "false_alarms": [
            c.record["instruction"] for c, hit in zip(cases, flagged, strict=True) if c.cls != "injection" and hit
        ],
    }


def pii_quality(cases: list[Case]) -> dict[str, Any]:
    decisions = run(cases, [{"op": "pii", "params": {}}])
    recall: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    false: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    false_alarms = []
    for case, ds in zip(cases, decisions, strict=True):
        spans = [s for d in ds if d["op"] == "pii" for s in d["evidence"].get("spans", [])]
        if case.cls == "pii":
            value = case.extra["value"]
            hit = any(s["kind"] == case.detail and (s["text"] in value or value in s["text"]) for s in spans)
            recall[case.detail][0] += hit
            recall[case.detail][1] += 1
        else:
            key = "hard_negative" if case.cls == "hard_negative" else "clean"
            false[key][0] += bool(spans)
            false[key][1] += 1
            if spans:
                false_alarms.append({"text": case.record["instruction"][:120], "spans": spans})
    return {
        "recall": {k: _rate(*v) for k, v in sorted(recall.items())},
        "false_positives": {k: _rate(*v) for k, v in false.items()},
        "false_alarms": false_alarms,
    }


def duplicate_quality(cases: list[Case], steps: list[dict[str, Any]], embed: Any = None) -> dict[str, Any]:
    decisions = run(cases, steps, embed=embed)
    dedup_ops = {"exact_dedup", "near_dedup", "semantic_dedup"}
    dropped = [any(d["op"] in dedup_ops and d["action"] == "drop" for d in ds) for ds in decisions]
    recall: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for case, hit in zip(cases, dropped, strict=True):
        if case.cls == "duplicate":
            recall[case.detail][0] += hit
            recall[case.detail][1] += 1
    # the natural records: the planted ones are made from templates and resemble each other by construction
    others = [hit for c, hit in zip(cases, dropped, strict=True) if c.cls == "clean"]
    return {
        "recall": {k: _rate(*v) for k, v in sorted(recall.items())},
        "false_positives": {"clean": _rate(sum(others), len(others))},
        "false_alarms": [
            c.record["instruction"][:100] for c, hit in zip(cases, dropped, strict=True) if c.cls == "clean" and hit
        ],
    }


def _cell(rate: dict[str, Any]) -> str:
    return f"{rate['rate']:.1%} ({rate['hits']}/{rate['total']})"


def markdown(report: dict[str, Any]) -> str:
    lines = [
        f"Cleaning quality on the labelled set ({report['records']} records, `bench/cleaning_set.py`), "
        f"{report['machine']} (`python bench/cleaning_quality.py`).",
        "",
        "## Prompt injection (recall per language and category; false positives)",
        "",
        "| class | patterns and detector (default) | patterns only |",
        "|---|---:|---:|",
    ]
    both, alone = report["injection"], report["injection_patterns_only"]
    for key in both["recall"]:
        lines.append(f"| recall {key} | {_cell(both['recall'][key])} | {_cell(alone['recall'][key])} |")
    for key in both["false_positives"]:
        together, patterns = both["false_positives"][key], alone["false_positives"][key]
        lines.append(f"| false positives, {key} | {_cell(together)} | {_cell(patterns)} |")
    lines += ["", "## Personal data (recall per kind; false positives)", "", "| class | rate |", "|---|---:|"]
    lines += [f"| recall {k} | {_cell(v)} |" for k, v in report["pii"]["recall"].items()]
    lines += [f"| false positives, {k} | {_cell(v)} |" for k, v in report["pii"]["false_positives"].items()]
    lines += [
        "",
        "## Duplicates (recall per kind; clean records dropped)",
        "",
        "| class | default recipe (semantic dedup included) | default recipe without semantic dedup |",
        "|---|---:|---:|",
    ]
    with_sem, without = report["duplicates_default_recipe"], report["duplicates_without_semantic"]
    for key in with_sem["recall"]:
        lines.append(f"| recall {key} | {_cell(with_sem['recall'][key])} | {_cell(without['recall'][key])} |")
    lines.append(
        f"| false positives, clean | {_cell(with_sem['false_positives']['clean'])} | "
        f"{_cell(without['false_positives']['clean'])} |"
    )
    timing = report["timing"]
    lines += [
        "",
        "## Cost",
        "",
        f"- The injection detector (fitting included) on the {report['records']} records: "
        f"{timing['injection_seconds']} s with it, {timing['injection_patterns_only_seconds']} s patterns only.",
        f"- Semantic dedup embeds {timing['semantic_records_per_second']} whole records a second with "
        f"all-MiniLM-L6-v2 (the model's loading not counted): the default recipe runs it up to "
        f"{report['semantic_default_max']:,} records, about "
        f"{report['semantic_default_max'] / timing['semantic_records_per_second'] / 60:.1f} minutes at that rate.",
        "",
        "Before the detector (3ade14c), the injection step's fixed patterns found 11.6 % (11/95) of the English "
        "attacks and 0 % (0/82) of the Chinese, and flagged 21.4 % (6/28) of the English hard negatives and 11.1 % "
        "(2/18) of the Chinese (the same set, that commit's cleaner).",
        "",
        "The attacks in the set are written in other words than the detector's exemplars, by the same team; the "
        "exemplars and patterns were extended after reading this set's and Alpaca's errors, so the set is a regression "
        "floor (tests/cleaning/test_quality_floors.py), not an independent measure of attacks in the wild.",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    from worker.cleaning.embed import Embedder

    cases = build()
    report: dict[str, Any] = {
        "machine": f"{platform.machine()}, Python {platform.python_version()}",
        "records": len(cases),
    }
    started = time.perf_counter()
    report["injection"] = injection_quality(cases)
    middle = time.perf_counter()
    report["injection_patterns_only"] = injection_quality(cases, {"detector": False})
    ended = time.perf_counter()
    report["pii"] = pii_quality(cases)
    without = [s for s in DEFAULT_RECIPE if s["op"] != "semantic_dedup"]
    report["duplicates_without_semantic"] = duplicate_quality(cases, without)
    embed = Embedder()
    report["duplicates_default_recipe"] = duplicate_quality(cases, DEFAULT_RECIPE, embed=embed)
    texts = [joined(as_messages(c.record)) for c in cases]
    embed(texts[:64])  # warm
    t0 = time.perf_counter()
    embed(texts)
    per_second = len(texts) / (time.perf_counter() - t0)
    report["semantic_default_max"] = next(s for s in DEFAULT_RECIPE if s["op"] == "semantic_dedup")["params"][
        "max_records"
    ]
    report["timing"] = {
        "injection_seconds": round(middle - started, 2),
        "injection_patterns_only_seconds": round(ended - middle, 2),
        "semantic_records_per_second": round(per_second),
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "cleaning_quality.json").write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    (RESULTS / "cleaning_quality.md").write_text(markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()
