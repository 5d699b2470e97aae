"""The web app's side of inference: it never loads a model, it asks the inference server (Refinery's own
process, or vLLM/any OpenAI-compatible server by configuration) and streams the answer on."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx

from app.core.config import get_settings
from app.core.errors import RefineryError
from app.core.i18n import _


class InferenceUnavailable(RefineryError):
    status_code = 503
    code = "inference_unavailable"


async def stream_chat(
    model: str, messages: list[dict[str, str]], ending: dict[str, Any] | None = None, **params: Any
) -> AsyncIterator[str]:
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
