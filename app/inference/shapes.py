"""OpenAI's chat completion objects, as both our inference process and the web app's /v1 send them."""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Completion:
    """One answer's identity; ``whole`` and ``chunk`` give its object whole or as a server-sent event."""

    model: str
    id: str = field(default_factory=lambda: f"chatcmpl-{uuid.uuid4().hex[:24]}")
    created: int = field(default_factory=lambda: int(time.time()))

    def whole(self, text: str, finish: str = "stop", usage: dict[str, int] | None = None) -> dict[str, Any]:
        message = {"role": "assistant", "content": text}
        body = self._object("chat.completion", [{"index": 0, "message": message, "finish_reason": finish}])
        return {**body, "usage": usage} if usage else body

    def chunk(self, delta: dict[str, str], finish: str | None = None) -> str:
        body = self._object("chat.completion.chunk", [{"index": 0, "delta": delta, "finish_reason": finish}])
        return f"data: {json.dumps(body)}\n\n"

    def usage_chunk(self, usage: dict[str, int]) -> str:
        """The last chunk when the client asked for ``stream_options.include_usage``: no choices, the counts."""
        body = {**self._object("chat.completion.chunk", []), "usage": usage}
        return f"data: {json.dumps(body)}\n\n"

    def _object(self, kind: str, choices: list[dict[str, Any]]) -> dict[str, Any]:
        return {"id": self.id, "object": kind, "created": self.created, "model": self.model, "choices": choices}


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def error_event(message: str, kind: str = "server_error") -> str:
    """An error inside a stream that has started (its status line was sent already)."""
    return f"data: {json.dumps({'error': {'message': message[:500], 'type': kind}})}\n\n"


DONE = "data: [DONE]\n\n"
