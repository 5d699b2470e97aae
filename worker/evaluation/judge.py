"""Child process: an LLM judge grades an evaluation's answers through an OpenAI-compatible chat endpoint.

For each sample it asks twice which answer is better, base or tuned, with their positions swapped (a verdict
counts only when both orders agree, which cancels the judge's bias for the first or second place), and rates
each answer on a rubric (relevance, clarity, completeness, accuracy, 1–5) with its reasons. A malformed reply,
a timeout or an HTTP error is recorded against that sample and never counted as a win; a judge that fails
many times in a row stops the run with the last error, instead of waiting out every timeout.

Writes ``verdicts.jsonl`` into the output directory and reports the summary as its result.
"""

from __future__ import annotations

import json
import re
import sys
import uuid
from pathlib import Path
from typing import Any

from app.core.chat import ChatClient, ChatError
from worker.protocol import emit, exit_with_parent, fail, progress

CRITERIA = ("relevance", "clarity", "completeness", "accuracy")
PAIR = ("base", "tuned")
MAX_FAILURES_IN_A_ROW = 6
SYSTEM = (
    "You are an impartial judge of answers written by AI assistants. Judge only the answers' quality for the "
    "user's request; a reference answer, when given, shows what a good answer contains. Reply with one JSON "
    "object and nothing else."
)


# one call that gave no usable verdict; ``kind`` is refused, timeout, http, unreachable or malformed
JudgeError = ChatError


def _conversation(prompt: list[dict[str, str]]) -> str:
    return "\n".join(f"[{m['role']}] {m['content']}" for m in prompt)


def pairwise_prompt(sample: dict[str, Any], first: str, second: str) -> str:
    return (
        f"Conversation so far:\n{_conversation(sample['prompt'])}\n\n"
        f"Reference answer:\n{sample['reference']}\n\n"
        f"Answer A:\n{sample[first]['output']}\n\nAnswer B:\n{sample[second]['output']}\n\n"
        'Which answer is better? Reply as {"winner": "A" | "B" | "tie", "reason": "<one or two sentences>"}.'
    )


def rubric_prompt(sample: dict[str, Any], variant: str) -> str:
    return (
        f"Conversation so far:\n{_conversation(sample['prompt'])}\n\n"
        f"Reference answer:\n{sample['reference']}\n\nAnswer to rate:\n{sample[variant]['output']}\n\n"
        "Rate the answer from 1 (poor) to 5 (excellent) on relevance, clarity, completeness and accuracy. Reply "
        'as {"relevance": n, "clarity": n, "completeness": n, "accuracy": n, "reasons": "<why>"}.'
    )


def parse_object(text: str) -> dict[str, Any]:
    """The JSON object in a reply, allowing a code fence or words around it."""
    match = re.search(r"\{.*\}", text, flags=re.DOTALL)
    if match is None:
        raise JudgeError("malformed", f"no JSON object in the reply: {text[:200]!r}")
    try:
        value = json.loads(match.group(0))
    except json.JSONDecodeError as exc:
        raise JudgeError("malformed", f"invalid JSON in the reply ({exc.msg}): {text[:200]!r}") from exc
    if not isinstance(value, dict):
        raise JudgeError("malformed", f"the reply is not a JSON object: {text[:200]!r}")
    return value


def parse_winner(text: str) -> tuple[str, str]:
    value = parse_object(text)
    winner = str(value.get("winner", "")).strip().upper()
    if winner not in ("A", "B", "TIE"):
        raise JudgeError("malformed", f"'winner' must be A, B or tie, not {value.get('winner')!r}")
    return winner.lower() if winner == "TIE" else winner, str(value.get("reason", ""))[:1000]


def parse_rubric(text: str) -> dict[str, Any]:
    value = parse_object(text)
    scores: dict[str, Any] = {}
    for criterion in CRITERIA:
        raw = value.get(criterion)
        if isinstance(raw, bool) or not isinstance(raw, int | float) or not 1 <= raw <= 5:
            raise JudgeError("malformed", f"{criterion!r} must be a number from 1 to 5, not {raw!r}")
        scores[criterion] = float(raw)
    scores["reasons"] = str(value.get("reasons", value.get("reason", "")))[:2000]
    return scores


class Client(ChatClient):
    """The judge's endpoint (app/core/chat.py): one system prompt, greedy, a short JSON reply."""

    def ask_judge(self, prompt: str) -> str:
        messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": prompt}]
        return self.ask(messages, temperature=0, max_tokens=400)


class Judging:
    def __init__(self, client: Client) -> None:
        self.client = client
        self.failures_in_a_row = 0
        self.last_failure = ""

    def call(self, prompt: str, parse: Any) -> tuple[Any, str | None, str]:
        """(parsed value or None, error kind or None, error detail)."""
        try:
            value = parse(self.client.ask_judge(prompt))
        except JudgeError as exc:
            if exc.kind != "malformed":
                self.failures_in_a_row += 1
                self.last_failure = exc.detail
            return None, exc.kind, exc.detail
        self.failures_in_a_row = 0
        return value, None, ""

    def pairwise(self, sample: dict[str, Any]) -> dict[str, Any]:
        orders = []
        for first, second in (PAIR, PAIR[::-1]):
            value, error, detail = self.call(pairwise_prompt(sample, first, second), parse_winner)
            order: dict[str, Any] = {"a": first, "b": second}
            if error:
                order.update(error=error, detail=detail)
            else:
                choice, reason = value
                order.update(pick={"A": first, "B": second}.get(choice, "tie"), reason=reason)
            orders.append(order)
        picks = [o.get("pick") for o in orders]
        errors = [o["error"] for o in orders if "error" in o]
        if errors:
            winner, error = None, errors[0]
        elif picks[0] == picks[1]:
            winner, error = picks[0], None
        else:
            winner, error = "inconsistent", None  # the verdict followed the position: no winner
        return {"winner": winner, "error": error, "orders": orders}

    def rubric(self, sample: dict[str, Any], variant: str) -> dict[str, Any]:
        value, error, detail = self.call(rubric_prompt(sample, variant), parse_rubric)
        return {"error": error, "detail": detail} if error else value


def summarise(verdicts: list[dict[str, Any]]) -> dict[str, Any]:
    outcomes = {"tuned": 0, "base": 0, "tie": 0, "inconsistent": 0}
    errors = {"malformed": 0, "timeout": 0, "http": 0, "unreachable": 0}
    rubric: dict[str, dict[str, list[float]]] = {v: {c: [] for c in CRITERIA} for v in PAIR}
    for verdict in verdicts:
        pairwise = verdict["pairwise"]
        if pairwise["winner"] is not None:
            outcomes[pairwise["winner"]] += 1
        for order in pairwise["orders"]:
            if order.get("error"):
                errors[order["error"]] += 1
        for variant in PAIR:
            rating = verdict["rubric"][variant]
            if rating.get("error"):
                errors[rating["error"]] += 1
                continue
            for criterion in CRITERIA:
                rubric[variant][criterion].append(rating[criterion])
    means = {v: {c: (sum(xs) / len(xs) if xs else None) for c, xs in per.items()} for v, per in rubric.items()}
    return {
        "samples": len(verdicts),
        "judged": sum(outcomes.values()),
        "outcomes": outcomes,
        "errors": errors,
        "rubric": means,
    }


def api_key(job: dict[str, Any]) -> str | None:
    """The judge's key, read here rather than passed on the command line (where process lists show it)."""
    from app.core.config import get_settings

    if job.get("local"):
        return get_settings().inference_key()
    from app.db.models import Judge
    from app.db.session import session_scope

    with session_scope() as session:
        judge = session.get(Judge, uuid.UUID(job["judge_id"]))
        return judge.api_key if judge is not None else None


def run(job: dict[str, Any]) -> dict[str, Any]:
    path = Path(job["samples_path"])
    samples = [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []
    samples = [s for s in samples if all(isinstance(s.get(v), dict) for v in PAIR)]
    if not samples:
        fail("data", "no_samples")
        raise SystemExit(1)
    judging = Judging(Client(job["url"], job["model"], api_key(job), float(job.get("timeout_s", 60))))
    verdicts = []
    for n, sample in enumerate(samples, start=1):
        verdict = {"id": sample["id"], "pairwise": judging.pairwise(sample)}
        verdict["rubric"] = {variant: judging.rubric(sample, variant) for variant in PAIR}
        verdicts.append(verdict)
        if judging.failures_in_a_row >= MAX_FAILURES_IN_A_ROW:
            fail(
                "judge",
                "judge_unreachable",
                count=judging.failures_in_a_row,
                detail=judging.last_failure[:300],
            )
            raise SystemExit(1)
        progress(0.02 + 0.96 * n / len(samples), "judging", done=n, total=len(samples))
    output = Path(job["output_dir"])
    output.mkdir(parents=True, exist_ok=True)
    partial = output / "verdicts.jsonl.partial"
    with partial.open("w") as handle:
        for verdict in verdicts:
            handle.write(json.dumps(verdict, ensure_ascii=False) + "\n")
    partial.replace(output / "verdicts.jsonl")
    return {**summarise(verdicts), "judge": {"name": job["judge_name"], "model": job["model"]}}


def main(job: dict[str, Any]) -> int:
    exit_with_parent()
    try:
        result = run(job)
    except SystemExit as exc:
        return int(exc.code or 1)
    emit(result=result)
    return 0


if __name__ == "__main__":
    sys.exit(main(json.loads(sys.argv[1])))
