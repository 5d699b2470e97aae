"""Child process: an eval run grades its items with the eval's testing criteria (app/graders; python
graders in their sandbox, model graders through the judges set up here) and writes ``output_items.jsonl``,
one row per item with each criterion's score, pass and errors. A grader's failure is the item's error, never
the run's; the run fails only when it cannot read its items."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from app.core.chat import ChatClient, ChatError
from app.evaluation.evals import criterion, pass_threshold, summarise
from app.graders.grade import grade
from app.graders.similarity import MetricUnavailable
from app.graders.template import TemplateError, render
from worker.protocol import emit, exit_with_parent, fail, progress


def needs_sample(grader: Any) -> bool:
    """Whether the criterion reads the sample (a python grader always may)."""
    return grader.type == "python" or "sample." in json.dumps(grader.model_dump(mode="json"))


NO_SAMPLE = 'this item has no sample to grade: give each line a "sample" with its "output_text"'


def prompt_for(plan: dict[str, Any], item: dict[str, Any]) -> list[dict[str, str]]:
    """The messages a completions source sends for ``item``; a ValueError says why there are none."""
    prompt = plan["prompt"]
    if "template" in prompt:
        try:
            return [
                {"role": m["role"], "content": render(m["content"], item=item, sample={})} for m in prompt["template"]
            ]
        except TemplateError as exc:
            raise ValueError(str(exc)) from None
    value: Any = {"item": item}
    for part in prompt["item_reference"].split("."):
        value = value.get(part) if isinstance(value, dict) else None
    if not isinstance(value, list) or not all(
        isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str) for m in value
    ):
        raise ValueError(f"{prompt['item_reference']} is not a list of messages with a role and text content")
    return [{"role": m["role"], "content": m["content"]} for m in value]


def sample_item(plan: dict[str, Any], client: ChatClient, item: dict[str, Any]) -> tuple[dict[str, Any] | None, str]:
    """The model's answer to the item's prompt as a sample, or None and why."""
    params = plan["params"]
    try:
        messages = prompt_for(plan, item)
        answer = client.complete(messages, **params)
    except ValueError as exc:
        return None, f"the prompt could not be made from this item: {exc}"
    except ChatError as exc:
        return None, f"the model could not answer ({exc.kind}): {exc.detail}"
    return {
        "output_text": answer["content"],
        "model": plan["model"],
        "input": messages,
        "finish_reason": answer["finish_reason"],
        "usage": answer["usage"],
        "max_completion_tokens": params["max_tokens"],
        "temperature": params["temperature"],
        "top_p": params["top_p"],
        "seed": params.get("seed", 0),
    }, ""


class LazyEmbedder:
    """The sentence-embedding model, loaded at the first cosine similarity (most evals have none)."""

    def __init__(self) -> None:
        self.model: Any = None

    def __call__(self, texts: list[str]) -> Any:
        if self.model is None:
            from worker.cleaning.embed import Embedder

            try:
                self.model = Embedder()
            except ValueError as exc:  # the embedding model's package is not installed on this worker
                raise MetricUnavailable(str(exc)) from None
        return self.model(texts)


def grade_item(
    index: int,
    entry: dict[str, Any],
    graders: list[Any],
    ask: Any,
    why_no_sample: str = NO_SAMPLE,
    embed: Any = None,
) -> dict[str, Any]:
    sample = entry.get("sample")
    results: list[dict[str, Any]] = []
    missing = sample is None and any(needs_sample(g) for g in graders)
    for grader in graders:
        if missing:
            results.append(
                {
                    "name": grader.name,
                    "type": grader.type,
                    "score": 0.0,
                    "passed": False,
                    "sample": {"errors": ["sample_parse_error"], "details": {"sample_parse_error": why_no_sample}},
                }
            )
            continue
        output_text = str((sample or {}).get("output_text", ""))
        graded = grade(grader, output_text=output_text, item=entry["item"], ask=ask, embed=embed)
        detail: dict[str, Any] = {}
        if graded.failed:
            detail["errors"] = [flag for flag, on in graded.errors.items() if on]
            detail["details"] = graded.details
        if graded.sub_scores:
            detail["sub_scores"] = graded.sub_scores
        if graded.model_output is not None:
            detail["model_output"] = graded.model_output
        results.append(
            {
                "name": grader.name,
                "type": grader.type,
                "score": graded.score,
                "passed": not graded.failed and graded.score >= pass_threshold(grader),
                "sample": detail or None,
            }
        )
    errored = any(r["sample"] and r["sample"].get("errors") for r in results)
    status = "error" if errored else ("pass" if all(r["passed"] for r in results) else "fail")
    return {"index": index, "item": entry["item"], "sample": sample, "results": results, "status": status}


def run(job: dict[str, Any]) -> dict[str, Any]:
    folder = Path(job["folder"])
    graders = [criterion(spec) for spec in job["criteria"]]
    ask = None
    if any(g.type in ("score_model", "label_model", "multi") for g in graders):
        from app.db.session import session_scope
        from app.evaluation.judges import GraderJudges

        with session_scope() as session:
            ask = GraderJudges(session)
    lines = (folder / "items.jsonl").read_text(encoding="utf-8").splitlines()
    items = [json.loads(line) for line in lines if line.strip()]
    plan, client = None, None
    if (folder / "sampling.json").is_file():
        from app.core.config import get_settings

        settings = get_settings()
        plan = json.loads((folder / "sampling.json").read_text(encoding="utf-8"))
        # Refinery's own inference process: the base model and the adapter it names, as chat completions do
        client = ChatClient(
            f"{settings.inference_base_url}/v1", plan["inference_model"], settings.inference_key(), 600.0
        )
    graded = []
    embed = LazyEmbedder()
    for index, entry in enumerate(items):
        why = NO_SAMPLE
        if plan is not None and client is not None:
            entry["sample"], why = sample_item(plan, client, entry["item"])
        graded.append(grade_item(index, entry, graders, ask, why or NO_SAMPLE, embed))
        progress(0.02 + 0.96 * (index + 1) / len(items), "grading_items", done=index + 1, total=len(items))
    if client is not None:
        client.close()
    partial = folder / "output_items.jsonl.partial"
    with partial.open("w", encoding="utf-8") as handle:
        for row in graded:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    partial.replace(folder / "output_items.jsonl")
    if ask is not None:
        ask.close()
    return summarise(job["criteria"], graded)


def main(job: dict[str, Any]) -> int:
    exit_with_parent()
    try:
        result = run(job)
    except (OSError, ValueError) as exc:
        fail("internal", "eval_run_error", detail=str(exc)[:300])
        return 1
    emit(result=result)
    return 0


if __name__ == "__main__":
    sys.exit(main(json.loads(sys.argv[1])))
