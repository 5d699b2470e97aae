"""The inference process: a long-lived OpenAI-compatible chat server on loopback for the playground and /v1.

It loads each base model once and hot-swaps PEFT adapters on it (``load_adapter`` / ``set_adapter``; the
base model is the adapter switched off), keeping at most ``inference_max_models`` bases and
``inference_max_adapters`` adapters per base (least recently used leave). Model names:

* ``base-<model id>`` a base model;
* ``job-<job id>`` the adapter (or full weights) of a succeeded training job;
* ``job-<job id>@checkpoint-<N>`` one of its complete checkpoints.

The web app checks ownership before it asks; this process only answers requests carrying the install's
inference key. Generation runs one request at a time, each on a thread of its own, with waiting requests served
in turns per user (``FairLock``), streamed token by token as server-sent events in OpenAI's
``chat.completion.chunk`` shape. A prompt that does not fit the context is refused with OpenAI's
``context_length_exceeded``; an answer ends at max_tokens, the context's end or ``inference_max_seconds``, and
stops at its next token when its client disconnects. Start it with ``refinery inference`` (``refinery up``
does).
"""

from __future__ import annotations

import hmac
import json
import threading
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, Field
from starlette.concurrency import iterate_in_threadpool, run_in_threadpool

from app.core.config import get_settings
from app.datasets.storage import artifact_path
from app.db.models import BaseModelRecord, Run, RunStatus, TrainingJob
from app.db.session import session_scope
from app.inference.shapes import DONE, Completion, error_event, usage
from app.jobs.checkpoints import COMPLETE_MARKER
from worker.inference.pairs import Rendezvous, Slot, batchable, generate_batch, same_sampling
from worker.inference.scheduling import ContextTooLong, FairLock, Generation, time_budget


class Message(BaseModel):
    role: str = Field(pattern="^(system|user|assistant)$")
    content: str = Field(max_length=100_000)


class StreamOptions(BaseModel):
    include_usage: bool = False


class ChatRequest(BaseModel):
    model: str = Field(max_length=200)
    messages: list[Message] = Field(min_length=1, max_length=200)
    temperature: float = Field(default=0.7, ge=0, le=2)
    top_p: float = Field(default=1.0, gt=0, le=1)
    max_tokens: int = Field(default=256, ge=1, le=4096)
    stream: bool = False
    stream_options: StreamOptions | None = None
    seed: int | None = Field(default=None, ge=-(2**63), le=2**63 - 1)
    user: str = Field(default="", max_length=200)  # whose turn it is: requests are served in turns per user
    # side by side: the two requests of one comparison share this id and are generated together (pairs.py)
    pair: str = Field(default="", max_length=64, pattern=r"^[A-Za-z0-9_-]*$")


@dataclass(frozen=True)
class Target:
    name: str
    base_dir: Path
    chat_template: str | None
    adapter_dir: Path | None  # a PEFT adapter on the base
    full_dir: Path | None  # full or freeze fine-tuning: its own weights
    context: int = 2048  # the base model's context length, in tokens


class UnknownModel(LookupError):
    pass


def resolve(name: str) -> Target:
    """What a model name stands for, from the database (ownership is the web app's job)."""
    kind, _, rest = name.partition("-")
    ident, _, checkpoint = rest.partition("@")
    try:
        object_id = uuid.UUID(ident)
    except ValueError as exc:
        raise UnknownModel(name) from exc
    with session_scope() as session:
        if kind == "base":
            model = session.get(BaseModelRecord, object_id)
            if model is None or not model.storage_key:
                raise UnknownModel(name)
            return Target(
                name, artifact_path(model.storage_key), model.chat_template, None, None, model.context_length or 2048
            )
        job = session.get(TrainingJob, object_id) if kind == "job" else None
        model = session.get(BaseModelRecord, job.base_model_id) if job else None
        run = session.get(Run, job.run_id) if job and job.run_id else None
        if job is None or model is None or not model.storage_key:
            raise UnknownModel(name)
        if checkpoint:
            if not checkpoint.startswith("checkpoint-") or not checkpoint[11:].isdigit():
                raise UnknownModel(name)
            weights = artifact_path(f"{job.storage_key}/checkpoints/{checkpoint}")
            if not (weights / COMPLETE_MARKER).is_file():
                raise UnknownModel(name)
        else:
            if run is None or run.status != RunStatus.succeeded:
                raise UnknownModel(name)
            weights = artifact_path(f"{job.storage_key}/final")
        base_dir = artifact_path(model.storage_key)
        context = model.context_length or 2048
        if (weights / "adapter_config.json").is_file():
            return Target(name, base_dir, model.chat_template, weights, None, context)
        return Target(name, base_dir, model.chat_template, None, weights, context)


@dataclass
class Loaded:
    model: Any
    tokenizer: Any
    adapters: OrderedDict[str, None] = field(default_factory=OrderedDict)
    peft_type: str | None = None


class Cache:
    """Loaded models keyed by weights directory (and adapter family); bounded, least recently used leave."""

    def __init__(self, max_models: int, max_adapters: int) -> None:
        self.entries: OrderedDict[str, Loaded] = OrderedDict()
        self.max_models = max_models
        self.max_adapters = max_adapters
        self.loads = 0  # base weights read from disk (a test checks that swapping adapters does not reload)

    def _load_base(self, directory: Path) -> Loaded:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        cuda = torch.cuda.is_available()
        dtype = torch.bfloat16 if cuda and torch.cuda.is_bf16_supported() else torch.float32
        model = AutoModelForCausalLM.from_pretrained(
            str(directory), dtype=dtype, use_safetensors=True, trust_remote_code=False
        )
        model = model.to("cuda" if cuda else "cpu").eval()
        tokenizer = AutoTokenizer.from_pretrained(str(directory), trust_remote_code=False)
        self.loads += 1
        return Loaded(model, tokenizer)

    def _entry(self, key: str, directory: Path) -> Loaded:
        if key in self.entries:
            self.entries.move_to_end(key)
            return self.entries[key]
        while len(self.entries) >= self.max_models:
            self.entries.popitem(last=False)
        entry = self._load_base(directory)
        self.entries[key] = entry
        return entry

    def model_for(self, target: Target) -> tuple[Any, Any, str | None]:
        """(model, tokenizer, adapter name or None for the plain weights)."""
        if target.full_dir is not None:
            entry = self._entry(f"full:{target.full_dir}", target.full_dir)
            return entry.model, entry.tokenizer, None
        if target.adapter_dir is None:
            # a base model: any entry on these weights serves it with its adapters switched off
            for key, entry in self.entries.items():
                if key.startswith(f"base:{target.base_dir}|"):
                    self.entries.move_to_end(key)
                    return entry.model, entry.tokenizer, None
            entry = self._entry(f"base:{target.base_dir}|", target.base_dir)
            return entry.model, entry.tokenizer, None
        config = json.loads((target.adapter_dir / "adapter_config.json").read_text())
        peft_type = str(config.get("peft_type", "LORA"))
        key, plain = f"base:{target.base_dir}|{peft_type}", f"base:{target.base_dir}|"
        if key not in self.entries and plain in self.entries:  # the plain base becomes this adapter family's
            self.entries[key] = self.entries.pop(plain)
        entry = self._entry(key, target.base_dir)
        name = target.name.replace(".", "_").replace("@", "_")
        if name not in entry.adapters:
            from peft import PeftModel

            if entry.peft_type is None:
                entry.model = PeftModel.from_pretrained(entry.model, str(target.adapter_dir), adapter_name=name)
                entry.peft_type = peft_type
            else:
                entry.model.load_adapter(str(target.adapter_dir), adapter_name=name)
            entry.model.eval()
            entry.adapters[name] = None
            while len(entry.adapters) > self.max_adapters:
                old, _ = entry.adapters.popitem(last=False)
                entry.model.delete_adapter(old)
        entry.adapters.move_to_end(name)
        return entry.model, entry.tokenizer, name


def preload() -> None:
    """Resolve the heavy libraries' names once, on the main thread. transformers resolves them lazily, and
    two requests doing it at the same moment from server threads (a side-by-side chat) made one of them fail
    with "cannot import name 'TextIteratorStreamer'"."""
    import peft
    import transformers

    for name in ("AutoModelForCausalLM", "AutoTokenizer", "TextIteratorStreamer"):
        getattr(transformers, name)
    peft.PeftModel  # noqa: B018  (the attribute access is the point)


class _AllCancelled:
    """Cancelled when every one of these requests is (the lock's wait for a pair)."""

    def __init__(self, generations: list[Generation]) -> None:
        self.generations = generations

    def is_set(self) -> bool:
        return all(g.cancel.is_set() for g in self.generations)


class Cancelled(RuntimeError):
    """The client went away (or the request was abandoned) before its turn came."""


# No tokenizer's token spans this many characters: a prompt longer than the context times this cannot fit and
# is refused without being tokenised (a 20 MB prompt is never held as tokens).
MAX_CHARS_PER_TOKEN = 64


class Engine:
    def __init__(self) -> None:
        preload()
        settings = get_settings()
        self.cache = Cache(settings.inference_max_models, settings.inference_max_adapters)
        self.lock = FairLock()
        self.max_seconds = settings.inference_max_seconds
        self.rendezvous = Rendezvous()
        self.paired = 0  # side-by-side pairs generated as one batch

    def start(self, request: ChatRequest) -> Generation:
        generation = Generation()
        threading.Thread(target=self._run, args=(request, generation), daemon=True).start()
        return generation

    def _run(self, request: ChatRequest, generation: Generation) -> None:
        partner = self.rendezvous.meet(request, generation) if request.pair else None
        if partner is False:
            return  # the other half of the pair answers this request too
        if isinstance(partner, Slot):
            self._run_pair(request, generation, partner)
            return
        try:
            target = self._checked(request)
            if not self.lock.acquire(request.user, generation.cancel):
                raise Cancelled("the request was cancelled while it waited for its turn")
            try:
                self._generate(request, target, generation)
            finally:
                self.lock.release()
        except BaseException as exc:  # given to the reader of the pieces
            generation.put(exc)
        finally:
            generation.finish()

    @staticmethod
    def _checked(request: ChatRequest) -> Target:
        target = resolve(request.model)
        chars = sum(len(m.content) for m in request.messages)
        if chars > target.context * MAX_CHARS_PER_TOKEN:
            raise ContextTooLong(None, target.context)
        return target

    def _run_pair(self, request: ChatRequest, generation: Generation, partner: Slot) -> None:
        """Both halves of a side-by-side comparison, in one batch when one model can serve both, else one
        after the other; each half's failure is its own."""
        halves: list[tuple[ChatRequest, Target, Generation]] = []
        for req, gen in ((partner.request, partner.generation), (request, generation)):
            try:
                halves.append((req, self._checked(req), gen))
            except BaseException as exc:
                gen.put(exc)
                gen.finish()
        gens = [gen for _req, _target, gen in halves]
        try:
            if not halves:
                return
            if not self.lock.acquire(request.user, _AllCancelled(gens)):
                raise Cancelled("the request was cancelled while it waited for its turn")
            try:
                if len(halves) == 2 and self._one_batch(halves):
                    generate_batch(self.cache, self.max_seconds, halves)
                    self.paired += 1
                else:  # one after the other, each half ending on its own
                    for req, target, gen in halves:
                        try:
                            self._generate(req, target, gen)
                        except BaseException as exc:
                            gen.put(exc)
                        gen.finish()
                    gens = []
            finally:
                self.lock.release()
        except BaseException as exc:
            for gen in gens:
                gen.put(exc)
        finally:
            for gen in gens:
                gen.finish()

    def _one_batch(self, halves: list[tuple[ChatRequest, Target, Generation]]) -> bool:
        (first, first_target, _), (second, second_target, _) = halves
        adapters = sum(t.adapter_dir is not None for t in (first_target, second_target))
        return (
            same_sampling(first, second)
            and batchable(first_target, second_target)
            and adapters <= self.cache.max_adapters  # both stay loaded
        )

    def _generate(self, request: ChatRequest, target: Target, generation: Generation) -> None:
        """Runs with the model to itself. Stops at the end of the answer, at max_tokens or the context's end,
        at the per-request time budget, or when the client has gone."""
        import contextlib

        import torch
        from transformers import TextIteratorStreamer

        class Forwarding(TextIteratorStreamer):  # type: ignore[misc]
            """Counts the generated token ids and hands each finished piece of text to the request."""

            generated = 0
            last = -1

            def put(self, value: Any) -> None:
                if not (self.skip_prompt and self.next_tokens_are_prompt):
                    self.generated += int(value.numel())
                    self.last = int(value.reshape(-1)[-1])
                super().put(value)

            def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
                if text:
                    generation.put(text)

        budget_stop, timed_out = time_budget(self.max_seconds, [generation])

        model, tokenizer, adapter = self.cache.model_for(target)
        if target.chat_template:
            tokenizer.chat_template = target.chat_template
        messages = [m.model_dump(include={"role", "content"}) for m in request.messages]
        prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        inputs = tokenizer(prompt, return_tensors="pt", add_special_tokens=False).to(model.device)
        prompt_tokens = int(inputs["input_ids"].shape[1])
        if prompt_tokens >= target.context:
            raise ContextTooLong(prompt_tokens, target.context)
        budget = min(request.max_tokens, target.context - prompt_tokens)
        streamer = Forwarding(tokenizer, skip_prompt=True, skip_special_tokens=True)
        sample = request.temperature > 0
        kwargs: dict[str, Any] = {
            **inputs,
            "max_new_tokens": budget,
            "do_sample": sample,
            "streamer": streamer,
            "stopping_criteria": budget_stop,
            "pad_token_id": tokenizer.pad_token_id or tokenizer.eos_token_id,
        }
        if sample:
            kwargs.update(temperature=request.temperature, top_p=request.top_p)
        if request.seed is not None:
            torch.manual_seed(request.seed)
        is_peft = hasattr(model, "peft_config")
        switch: Any = contextlib.nullcontext()
        if is_peft and adapter is None:
            switch = model.disable_adapter()
        elif is_peft:
            model.set_adapter(adapter)
        try:
            with switch, torch.no_grad():
                model.generate(**kwargs)
        except Exception as exc:
            raise RuntimeError(str(exc)) from exc
        stops = model.generation_config.eos_token_id
        stops = set(stops if isinstance(stops, list) else [stops]) | {tokenizer.eos_token_id}
        full = streamer.generated >= budget and streamer.last not in stops
        generation.ending["finish_reason"] = "length" if full or timed_out.is_set() else "stop"
        generation.ending["usage"] = usage(prompt_tokens, streamer.generated)


def _refusal(status: int, message: str, code: str, param: str | None = None) -> JSONResponse:
    kind = "invalid_request_error" if status < 500 else "server_error"
    return JSONResponse({"error": {"message": message, "type": kind, "param": param, "code": code}}, status)


def create_app() -> FastAPI:
    engine = Engine()
    app = FastAPI(title="Refinery inference", docs_url=None, redoc_url=None)
    key = get_settings().inference_key()

    @app.middleware("http")
    async def authenticate(request: Request, call_next: Any) -> Any:
        given = request.headers.get("authorization", "").removeprefix("Bearer ")
        if request.url.path != "/healthz" and not hmac.compare_digest(given, key):
            return JSONResponse({"error": {"message": "invalid inference key", "code": "unauthorized"}}, 401)
        return await call_next(request)

    @app.get("/healthz")
    def health() -> dict[str, Any]:
        loaded = list(engine.cache.entries)
        return {
            "ok": True,
            "loaded": loaded,
            "loads": engine.cache.loads,
            "waiting": engine.lock.waiting(),
            "paired": engine.paired,
        }

    @app.post("/v1/chat/completions", response_model=None)
    async def chat(request: Request, body: ChatRequest) -> Any:
        completion = Completion(body.model)
        generation = engine.start(body)
        pieces = generation.pieces()
        try:
            first = await run_in_threadpool(next, pieces, None)
        except UnknownModel as exc:
            return _refusal(404, f"The model '{exc}' does not exist", "model_not_found", "model")
        except ContextTooLong as exc:
            return _refusal(400, str(exc), "context_length_exceeded", "messages")
        except Cancelled as exc:
            return _refusal(499, str(exc), "cancelled")
        if body.stream:
            with_usage = body.stream_options is not None and body.stream_options.include_usage

            async def events() -> AsyncIterator[str]:
                try:
                    yield completion.chunk({"role": "assistant", "content": ""})
                    if first is not None:
                        yield completion.chunk({"content": first})
                    async for piece in iterate_in_threadpool(pieces):
                        yield completion.chunk({"content": piece})
                    yield completion.chunk({}, generation.ending.get("finish_reason", "stop"))
                    if with_usage and "usage" in generation.ending:
                        yield completion.usage_chunk(generation.ending["usage"])
                    yield DONE
                except RuntimeError as exc:
                    yield error_event(str(exc))
                    yield DONE
                finally:
                    generation.cancel.set()  # the client went away: the model stops at its next token

            return StreamingResponse(events(), media_type="text/event-stream")

        async def watch() -> None:
            while not generation.cancel.is_set():
                if await request.is_disconnected():
                    generation.cancel.set()
                    return
                await anyio.sleep(0.25)

        async with anyio.create_task_group() as group:
            group.start_soon(watch)
            try:
                rest = await run_in_threadpool(lambda: "".join(pieces))
            except RuntimeError as exc:
                return _refusal(500, str(exc), "generation_failed")
            finally:
                generation.cancel.set()
                group.cancel_scope.cancel()
        text = (first or "") + rest
        return completion.whole(text, generation.ending.get("finish_reason", "stop"), generation.ending.get("usage"))

    return app


def main() -> None:
    import uvicorn

    settings = get_settings()
    uvicorn.run(create_app(), host=settings.inference_host, port=settings.inference_port, log_level="info")


if __name__ == "__main__":
    main()
