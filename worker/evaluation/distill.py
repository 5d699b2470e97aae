"""Child process: a teacher model answers a dataset version's prompts (distillation).

The teacher is any model set up under Judges: an OpenAI-compatible endpoint an administrator added, or an
imported base model served by our inference process. Each prompt is the record's conversation up to its last
user turn (a chat record's own answer is left out; a preference pair's prompt; a reinforcement prompt). Answers
are appended to ``answers.jsonl`` as they come, so a new attempt after a lost worker goes on from the first
prompt without an answer. A refused, timed-out or malformed call is counted and recorded against its prompt,
never written as an answer; a teacher that fails many times in a row stops the run with the last error.
The parent turns the answers into stored completions, reviewed on the Traffic page like served ones."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from app.core.chat import ChatClient, ChatError
from worker.evaluation.judge import api_key
from worker.protocol import fail, progress, run_child

MAX_FAILURES_IN_A_ROW = 6


def prompts(records_path: str, limit: int) -> list[dict[str, Any]]:
    """(record id, messages) of the version's train split, in file order, at most ``limit``."""
    import pyarrow.parquet as pq

    found: list[dict[str, Any]] = []
    for batch in pq.ParquetFile(records_path).iter_batches(batch_size=2000, columns=["id", "kind", "split", "data"]):
        for row in batch.to_pylist():
            if row["split"] != "train":
                continue
            data = json.loads(row["data"])
            messages = data.get("prompt") if row["kind"] == "preference" else data.get("messages")
            if isinstance(messages, str):
                messages = [{"role": "user", "content": messages}]
            if not isinstance(messages, list):
                continue
            turns = [{"role": str(m.get("role")), "content": str(m.get("content", ""))} for m in messages]
            while turns and turns[-1]["role"] == "assistant":
                turns.pop()
            if turns and turns[-1]["role"] == "user":
                found.append({"id": row["id"], "messages": turns})
            if len(found) >= limit:
                return found
    return found


def distill(job: dict[str, Any]) -> dict[str, Any]:
    out = Path(job["output_dir"])
    out.mkdir(parents=True, exist_ok=True)
    answers_path = out / "answers.jsonl"
    done = set()
    if answers_path.is_file():  # a new attempt: keep what the last one wrote
        for line in answers_path.read_text(encoding="utf-8").splitlines():
            try:
                done.add(json.loads(line)["id"])
            except (ValueError, KeyError):
                continue  # a line cut by the kill: asked again
    if answers_path.is_file() and not answers_path.read_bytes().endswith(b"\n") and answers_path.stat().st_size:
        with answers_path.open("a", encoding="utf-8") as answers:
            answers.write("\n")  # end the half-written line, so the next answer starts on its own
    todo = [p for p in prompts(job["records_path"], int(job["limit"])) if p["id"] not in done]
    total = len(todo) + len(done)
    if not total:
        fail("data", "no_prompts")
        raise SystemExit(1)
    client = ChatClient(job["url"], job["model"], api_key(job), float(job.get("timeout_s", 60)))
    sampling = {"max_tokens": int(job["max_tokens"]), "temperature": float(job["temperature"])}
    failures: dict[str, int] = {}
    in_a_row = 0
    tokens = {"prompt_tokens": 0, "completion_tokens": 0}
    try:
        with answers_path.open("a", encoding="utf-8") as answers:
            for n, prompt in enumerate(todo, start=1):
                try:
                    answer = client.complete(prompt["messages"], **sampling)
                except ChatError as exc:
                    failures[exc.kind] = failures.get(exc.kind, 0) + 1
                    in_a_row += 1
                    failed = {"id": prompt["id"], "messages": prompt["messages"], "error": f"{exc.kind}: {exc.detail}"}
                    answers.write(json.dumps(failed, ensure_ascii=False) + "\n")
                    answers.flush()
                    if in_a_row >= MAX_FAILURES_IN_A_ROW:
                        fail("external", "teacher_unreachable", count=in_a_row, detail=exc.detail[:300])
                        raise SystemExit(1) from exc
                    continue
                in_a_row = 0
                for key in tokens:
                    tokens[key] += int((answer.get("usage") or {}).get(key) or 0)
                answered = {"id": prompt["id"], "messages": prompt["messages"], **answer}
                answers.write(json.dumps(answered, ensure_ascii=False) + "\n")
                answers.flush()
                progress((len(done) + n) / total, "distilling", done=len(done) + n, total=total)
    finally:
        client.close()
    failures = {}  # over every attempt: the file holds each prompt's outcome once
    for line in answers_path.read_text(encoding="utf-8").splitlines():
        try:
            kind = str(json.loads(line).get("error") or "").partition(":")[0]
        except ValueError:
            continue  # a line a killed attempt left half-written (its prompt was asked again)
        if kind:
            failures[kind] = failures.get(kind, 0) + 1
    return {"prompts": total, "failures": failures, "tokens": tokens, "answers_path": str(answers_path)}


def main(job: dict[str, Any]) -> int:
    return run_child(distill, job, error_code="distill_error")


if __name__ == "__main__":
    sys.exit(main(json.loads(sys.argv[1])))
