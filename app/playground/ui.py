"""Playground pages: chat with a base model, an adapter or a checkpoint (or two side by side), streamed from
the inference server; thumbs and pairwise picks; "Make preference dataset"."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response, StreamingResponse

from app.core.deps import SessionDep, csrf_protect
from app.core.errors import InvalidInput
from app.core.i18n import _
from app.core.templating import render
from app.inference.client import stream_chat
from app.playground import service
from app.users.deps import PageUser

router = APIRouter(dependencies=[Depends(csrf_protect)], include_in_schema=False)


async def _json(request: Request) -> dict[str, Any]:
    try:
        body = json.loads(await request.body())
    except ValueError as exc:
        raise InvalidInput(_("The request body must be JSON.")) from exc
    if not isinstance(body, dict):
        raise InvalidInput(_("The request body must be a JSON object."))
    return body


@router.get("/playground")
def page(request: Request, session: SessionDep, user: PageUser) -> Response:
    available = service.chat_models(session, user=user)
    chosen = request.query_params.get("model", "")
    return render(
        request,
        "playground/index.html",
        {
            "chat_models": available,
            "selected": chosen if chosen in {m.name for m in available} else "",
            "counts": service.feedback_counts(session, user=user),
            "labels": json.dumps(
                {
                    "up": _("Good answer"),
                    "down": _("Bad answer"),
                    "a_better": _("A is better"),
                    "b_better": _("B is better"),
                    "saved": _("Thanks: saved for the preference dataset."),
                    "error": _("The answer could not be generated:"),
                }
            ),
        },
    )


@router.post("/playground/stream")
async def stream(request: Request, session: SessionDep, user: PageUser) -> Response:
    """The answer as plain text, piece by piece as the model writes it."""
    model, messages, params = service.chat_request(session, await _json(request), user=user)
    pieces = stream_chat(model, messages, **params, user=str(user.id))
    first = await anext(pieces, "")  # errors before the first token become a clean error response

    async def body() -> AsyncIterator[bytes]:
        yield first.encode()
        try:
            async for piece in pieces:
                yield piece.encode()
        except Exception as exc:  # the client shows what is there plus the reason
            yield f"\n\n[{exc}]".encode()
        finally:
            await pieces.aclose()  # a closed tab stops the generation too

    return StreamingResponse(
        body(), media_type="text/plain; charset=utf-8", headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
    )


@router.post("/playground/feedback")
async def feedback(request: Request, session: SessionDep, user: PageUser) -> Response:
    saved = service.save_feedback(session, await _json(request), user=user)
    return JSONResponse({"id": str(saved.id), "counts": service.feedback_counts(session, user=user)}, status_code=201)


@router.post("/playground/preferences")
async def make_dataset(request: Request, session: SessionDep, user: PageUser) -> Response:
    form = await request.form(max_files=0, max_fields=5)
    name = form.get("name")
    dataset = service.make_preference_dataset(session, user=user, name=name if isinstance(name, str) else "")
    return RedirectResponse(f"/datasets/{dataset.id}", status_code=303)
