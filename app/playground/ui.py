"""Playground pages: chat with a base model, an adapter or a checkpoint (or two side by side), streamed from
the inference server; thumbs and pairwise picks; "Make preference dataset"."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from app.core.deps import SessionDep, csrf_protect, end_reads
from app.core.forms import FormDep, JsonObject
from app.core.i18n import _
from app.core.templating import render
from app.inference.client import stream_chat
from app.playground import service
from app.users.deps import PageUser

router = APIRouter(dependencies=[Depends(csrf_protect)], include_in_schema=False)
END_MARK = "\x1e"  # ASCII record separator: the streamed answer's text ends here, how it ended follows


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
                    "cut": _("Cut off at the max tokens limit."),
                    "cut_no_pick": _(
                        "An answer cut off at the max tokens limit cannot be the better one: raise Max tokens and ask "
                        "again."
                    ),
                    "diverged": _(
                        "Each model has seen its own earlier answers, so these two answers reply to different "
                        "conversations and cannot be compared: pick after each turn, or start a new conversation."
                    ),
                }
            ),
        },
    )


@router.post("/playground/stream")
async def stream(session: SessionDep, user: PageUser, body: JsonObject) -> Response:
    """The answer as plain text, piece by piece as the model writes it. The one handler of the pages that
    awaits (the stream): its reads run in a worker thread and end before the first await."""

    def resolve() -> tuple[Any, Any, Any]:
        try:
            return service.chat_request(session, body, user=user)
        finally:
            end_reads(session)

    model, messages, params = await run_in_threadpool(resolve)
    ending: dict[str, Any] = {}
    pieces = stream_chat(model, messages, ending, **params, user=str(user.id))
    first = await anext(pieces, "")  # errors before the first token become a clean error response

    async def answer() -> AsyncIterator[bytes]:
        yield first.replace(END_MARK, "").encode()
        try:
            async for piece in pieces:
                yield piece.replace(END_MARK, "").encode()
        except Exception as exc:  # the client shows what is there plus the reason
            yield f"\n\n[{exc}]".encode()
        else:  # how the answer ended ("length": cut at max tokens), after a mark the text never holds
            yield (END_MARK + json.dumps({"finish_reason": ending.get("finish_reason")})).encode()
        finally:
            await pieces.aclose()  # a closed tab stops the generation too

    return StreamingResponse(
        answer(),
        media_type="text/plain; charset=utf-8",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


@router.post("/playground/feedback")
def feedback(session: SessionDep, user: PageUser, body: JsonObject) -> Response:
    saved = service.save_feedback(session, body, user=user)
    return JSONResponse({"id": str(saved.id), "counts": service.feedback_counts(session, user=user)}, status_code=201)


@router.post("/playground/preferences")
def make_dataset(session: SessionDep, user: PageUser, form: FormDep) -> Response:
    name = form.get("name")
    dataset = service.make_preference_dataset(session, user=user, name=name if isinstance(name, str) else "")
    return RedirectResponse(f"/datasets/{dataset.id}", status_code=303)
