"""A stand-in OpenAI-compatible judge on loopback (the judge is a model we do not own: the edge we may fake).

Its behaviour is decided by the request's text, so each test knows the verdicts in advance:

* a conversation containing ``MALFORMED`` gets prose instead of JSON; ``BADSCORE`` gets a rubric score of 9;
* a conversation containing ``SLOW`` is answered only after ``slow_s`` seconds (past the client's timeout);
* otherwise, pairwise, the answer containing ``GOOD`` wins whatever its position; when neither does, the
  server prefers the answer that sorts first (``prefer="sorted"``) or always the first one (``"first"``,
  a position-biased judge); the rubric gives 5 to an answer containing ``GOOD``, else 2.

A model grader's prompt (its last message asks for {"result": ...} or {"label": ...}) is answered by
``grader_reply``.

Every request's Authorization header is kept in ``seen_keys``. ``reason``, when given, replaces the text of
every verdict's reasons (a hostile judge's words, for the browser tests).
"""

from __future__ import annotations

import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

PAIR_RE = re.compile(r"Answer A:\n(?P<a>.*?)\n\nAnswer B:\n(?P<b>.*?)\n\nWhich answer", re.DOTALL)
RATE_RE = re.compile(r"Answer to rate:\n(?P<answer>.*?)\n\nRate the answer", re.DOTALL)


class FakeJudge:
    def __init__(self, *, prefer: str = "sorted", slow_s: float = 2.0, reason: str | None = None) -> None:
        self.prefer = prefer
        self.reason = reason
        self.slow_s = slow_s
        self.seen_keys: list[str] = []
        self.calls = 0
        judge = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                judge.calls += 1
                judge.seen_keys.append(self.headers.get("Authorization", ""))
                if not self.path.endswith("/chat/completions"):
                    self._send(404, {"error": "not found"})
                    return
                messages = body["messages"]
                last = messages[-1]["content"]
                if '{"result"' in last or '{"label"' in last:  # a model grader's prompt (app/graders/grade.py)
                    content = judge.grader_reply("\n".join(m["content"] for m in messages[:-1]), last)
                else:
                    content = judge.verdict(last)
                self._send(200, {"choices": [{"message": {"role": "assistant", "content": content}}]})

            def _send(self, status: int, payload: dict[str, Any]) -> None:
                data = json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up waiting (a timeout test)
                    pass

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def verdict(self, text: str) -> str:
        if "SLOW" in text:
            time.sleep(self.slow_s)
        if "MALFORMED" in text:
            return "Both answers have merit, but I lean towards the first one."
        pair = PAIR_RE.search(text)
        if pair:
            a, b = pair.group("a"), pair.group("b")
            if ("GOOD" in a) != ("GOOD" in b):
                winner = "A" if "GOOD" in a else "B"
            elif self.prefer == "first":
                winner = "A"
            else:
                winner = "tie" if a == b else ("A" if a < b else "B")
            reason = self.reason or f"Answer {winner} is preferred."
            return "```json\n" + json.dumps({"winner": winner, "reason": reason}) + "\n```"
        rated = RATE_RE.search(text)
        answer = rated.group("answer") if rated else ""
        score = 9 if "BADSCORE" in text else (5 if "GOOD" in answer else 2)
        return json.dumps(
            {
                "relevance": score,
                "clarity": score,
                "completeness": score,
                "accuracy": score,
                "reasons": self.reason or "Checked.",
            }
        )

    def grader_reply(self, text: str, instruction: str) -> str:
        """A score_model prompt gets 8 when its text holds GOOD, else 2; a label_model prompt gets the first
        label offered when the text holds GOOD, else the second."""
        if "SLOW" in text:
            time.sleep(self.slow_s)
        if "MALFORMED" in text:
            return "It is a fine answer."
        if '{"result"' in instruction:
            return json.dumps({"result": 8 if "GOOD" in text else 2, "reason": "Checked."})
        offered = instruction.split("one of: ", 1)[1].split(">", 1)[0].split(", ")
        return json.dumps({"label": offered[0] if "GOOD" in text else offered[1], "reason": "Checked."})

    def __enter__(self) -> FakeJudge:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)
