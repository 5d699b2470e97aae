"""The web app's side of inference: it never loads a model, it asks the inference server (Refinery's own
process, or vLLM/any OpenAI-compatible server by configuration) and streams the answer on."""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator
from typing import Any

import httpx

from app.core.config import get_settings
from app.core.errors import RefineryError
from app.core.i18n import _


class InferenceUnavailable(RefineryError):
    status_code = 503
    code = "inference_unavailable"


class InferenceRefused(RefineryError):
    """The request itself cannot be answered (a prompt longer than the model's context): a 400 with the
    inference server's own code and message, as OpenAI answers it."""

    status_code = 400


async def stream_chat(
    model: str, messages: list[dict[str, str]], ending: dict[str, Any] | None = None, **params: Any
) -> AsyncGenerator[str, None]:
    """The answer's text pieces as the server generates them. ``ending`` gets the finish reason and the token
    counts (``usage``) when the server sends them (ours does; vLLM does when asked, as here)."""
    settings = get_settings()
    body = {"model": model, "messages": messages, "stream": True, "stream_options": {"include_usage": True}, **params}
    headers = {"Authorization": f"Bearer {settings.inference_key()}"}
    timeout = httpx.Timeout(10.0, read=600.0)
    url = f"{settings.inference_base_url}/v1/chat/completions"
    try:
        async with (
            httpx.AsyncClient(timeout=timeout) as client,
            client.stream("POST", url, json=body, headers=headers) as response,
        ):
            if response.status_code == 400:
                error = _error_of(await response.aread())
                raise InferenceRefused(
                    str(error.get("message") or "The request was refused.")[:500],
                    code=str(error.get("code") or "invalid_request"),
                    field=str(error["param"]) if error.get("param") else None,
                )
            if response.status_code != 200:
                detail = (await response.aread()).decode(errors="replace")[:300]
                raise InferenceUnavailable(
                    _(
                        "The inference server refused the request (%(status)s): %(detail)s",
                        status=response.status_code,
                        detail=detail,
                    )
                )
            async for line in response.aiter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                chunk = json.loads(line[6:])
                if "error" in chunk:
                    raise InferenceUnavailable(
                        _("Generation failed: %(detail)s", detail=str(chunk["error"].get("message", ""))[:300])
                    )
                if ending is not None and chunk.get("usage"):
                    ending["usage"] = chunk["usage"]
                for choice in chunk.get("choices") or []:
                    if ending is not None and choice.get("finish_reason"):
                        ending["finish_reason"] = choice["finish_reason"]
                    piece = (choice.get("delta") or {}).get("content")
                    if piece:
                        yield piece
    except httpx.HTTPError as exc:
        raise InferenceUnavailable(
            _(
                "The inference server at %(url)s cannot be reached; start it with 'refinery inference' "
                "('refinery up' starts it) or check REFINERY_INFERENCE_URL.",
                url=settings.inference_base_url,
            )
        ) from exc


def _error_of(body: bytes) -> dict[str, Any]:
    try:
        error = json.loads(body).get("error")
    except (ValueError, AttributeError):
        return {}
    return error if isinstance(error, dict) else {}


async def until_disconnected(request: Any, pieces: AsyncGenerator[str, None]) -> str:
    """All the remaining text, unless the client disconnects first: then the stream is closed, so the
    inference server sees the connection go and stops generating at its next token."""
    import anyio

    parts: list[str] = []
    gone = False

    async def read() -> None:
        async for piece in pieces:
            parts.append(piece)
        group.cancel_scope.cancel()

    async def watch() -> None:
        nonlocal gone
        while not await request.is_disconnected():
            await anyio.sleep(0.25)
        gone = True
        group.cancel_scope.cancel()

    try:
        async with anyio.create_task_group() as group:
            group.start_soon(read)
            group.start_soon(watch)
    finally:
        await pieces.aclose()
    if gone:
        raise InferenceUnavailable(_("The client disconnected; generation stopped."))
    return "".join(parts)
