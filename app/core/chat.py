"""One chat completion from an OpenAI-compatible endpoint an administrator set up (a judge, a model grader).

The URL was typed by a person: every request and redirect is checked against loopback and private addresses
again as it is sent (app/core/outbound.py). Whatever goes wrong is a ``ChatError`` with a kind (refused,
timeout, unreachable, http, malformed) and a sentence, never another exception."""

from __future__ import annotations

from typing import Any

import httpx

from app.core.outbound import OutboundRefused, guarded_client


class ChatError(Exception):
    """One call that gave no usable answer; ``kind`` is refused, timeout, unreachable, http or malformed."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(detail)
        self.kind = kind
        self.detail = detail


class ChatClient:
    def __init__(self, url: str, model: str, api_key: str | None, timeout_s: float) -> None:
        self.url = url.rstrip("/") + "/chat/completions"
        self.model = model
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.http = guarded_client(timeout=httpx.Timeout(timeout_s, connect=min(timeout_s, 10.0)))

    def ask(self, messages: list[dict[str, str]], **sampling: Any) -> str:
        """The answer's text; ``sampling`` is sent as given (temperature, max_tokens, ...)."""
        return str(self.complete(messages, **sampling)["content"])

    def complete(self, messages: list[dict[str, str]], **sampling: Any) -> dict[str, Any]:
        """The answer's text (``content``), its ``finish_reason`` and the ``usage`` token counts."""
        body = {"model": self.model, "messages": messages, **sampling}
        try:
            response = self.http.post(self.url, json=body, headers=self.headers)
        except OutboundRefused as exc:
            raise ChatError("refused", exc.reason) from exc
        except httpx.TimeoutException as exc:
            raise ChatError("timeout", f"no answer within the timeout ({type(exc).__name__})") from exc
        except httpx.HTTPError as exc:
            raise ChatError("unreachable", f"{type(exc).__name__}: {exc}"[:300]) from exc
        if response.status_code != 200:
            raise ChatError("http", f"HTTP {response.status_code}: {response.text[:200]}")
        try:
            answer = response.json()
            choice = answer["choices"][0]
            content = choice["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise ChatError("malformed", f"not a chat completion: {response.text[:200]!r}") from exc
        if not isinstance(content, str):
            raise ChatError("malformed", "the completion has no text content")
        usage = answer.get("usage") if isinstance(answer.get("usage"), dict) else {}
        return {"content": content, "finish_reason": str(choice.get("finish_reason") or "stop"), "usage": usage}

    def close(self) -> None:
        self.http.close()
