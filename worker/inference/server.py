"""The inference process: a long-lived OpenAI-compatible chat server on loopback for the playground and /v1.

It loads each base model once and hot-swaps PEFT adapters on it (``load_adapter`` / ``set_adapter``; the
base model is the adapter switched off), keeping at most ``inference_max_models`` bases and
``inference_max_adapters`` adapters per base (least recently used leave). Model names:

* ``base-<model id>`` a base model;
* ``job-<job id>`` the adapter (or full weights) of a succeeded training job;
* ``job-<job id>@checkpoint-<N>`` one of its complete checkpoints.

The web app checks ownership before it asks; this process only answers requests carrying the install's
inference key. Generation runs one request at a time (a lock), streamed token by token as server-sent events
in OpenAI's ``chat.completion.chunk`` shape. Start it with ``refinery inference`` (``refinery up`` does).
"""

from __future__ import annotations

import hmac
import json
import threading
import uuid
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, Field

from app.core.config import get_settings
from app.datasets.storage import artifact_path
from app.db.models import BaseModelRecord, Run, RunStatus, TrainingJob
from app.db.session import session_scope
from app.inference.shapes import DONE, Completion, error_event, usage
from app.jobs.checkpoints import COMPLETE_MARKER


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


@dataclass(frozen=True)
class Target:
    name: str
    base_dir: Path
    chat_template: str | None
    adapter_dir: Path | None  # a PEFT adapter on the base
    full_dir: Path | None  # full or freeze fine-tuning: its own weights


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
            return Target(name, artifact_path(model.storage_key), model.chat_template, None, None)
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
        if (weights / "adapter_config.json").is_file():
            return Target(name, base_dir, model.chat_template, weights, None)
        return Target(name, base_dir, model.chat_template, None, weights)


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


class Engine:
    def __init__(self) -> None:
        preload()
        settings = get_settings()
        self.cache = Cache(settings.inference_max_models, settings.inference_max_adapters)
        self.lock = threading.Lock()

    def stream(self, request: ChatRequest, ending: dict[str, Any] | None = None) -> Iterator[str]:
        """Text pieces as they are generated (the lock is held for the whole generation). When it is over,
        ``ending`` gets the finish reason (``stop`` at the end of the answer, ``length`` at max_tokens) and
        the token counts (``usage``)."""
        import contextlib

        import torch
        from transformers import TextIteratorStreamer

        class CountingStreamer(TextIteratorStreamer):  # type: ignore[misc]
            """Counts the generated token ids it is given (the prompt's first put is skipped)."""

            generated = 0
            last = -1

            def put(self, value: Any) -> None:
                if not (self.skip_prompt and self.next_tokens_are_prompt):
                    self.generated += int(value.numel())
                    self.last = int(value.reshape(-1)[-1])
                super().put(value)

        target = resolve(request.model)
        with self.lock:
            model, tokenizer, adapter = self.cache.model_for(target)
            if target.chat_template:
                tokenizer.chat_template = target.chat_template
            messages = [m.model_dump() for m in request.messages]
            prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
            inputs = tokenizer(prompt, return_tensors="pt", add_special_tokens=False).to(model.device)
            streamer = CountingStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
            sample = request.temperature > 0
            kwargs: dict[str, Any] = {
                **inputs,
                "max_new_tokens": request.max_tokens,
                "do_sample": sample,
                "streamer": streamer,
                "pad_token_id": tokenizer.pad_token_id or tokenizer.eos_token_id,
            }
            if sample:
                kwargs.update(temperature=request.temperature, top_p=request.top_p)
            if request.seed is not None:
                torch.manual_seed(request.seed)
            is_peft = hasattr(model, "peft_config")
            switch = contextlib.nullcontext()
            if is_peft and adapter is None:
                switch = model.disable_adapter()
            elif is_peft:
                model.set_adapter(adapter)
            failure: list[BaseException] = []

            def work() -> None:
                try:
                    with switch, torch.no_grad():
                        model.generate(**kwargs)
                except BaseException as exc:  # reported to the client below
                    failure.append(exc)
                    streamer.end()

            thread = threading.Thread(target=work, daemon=True)
            thread.start()
            yield from (piece for piece in streamer if piece)
            thread.join()
            if failure:
                raise RuntimeError(str(failure[0]))
            if ending is not None:
                stops = model.generation_config.eos_token_id
                stops = set(stops if isinstance(stops, list) else [stops]) | {tokenizer.eos_token_id}
                full = streamer.generated >= request.max_tokens and streamer.last not in stops
                ending["finish_reason"] = "length" if full else "stop"
                ending["usage"] = usage(int(inputs["input_ids"].shape[1]), streamer.generated)


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
        return {"ok": True, "loaded": list(engine.cache.entries), "loads": engine.cache.loads}

    @app.post("/v1/chat/completions", response_model=None)
    def chat(request: ChatRequest) -> Any:
        completion = Completion(request.model)
        ending: dict[str, Any] = {}
        try:
            pieces = engine.stream(request, ending)
            first = next(pieces, None)
        except UnknownModel as exc:
            raise HTTPException(404, f"unknown model {exc}") from exc
        if request.stream:
            with_usage = request.stream_options is not None and request.stream_options.include_usage

            def events() -> Iterator[str]:
                yield completion.chunk({"role": "assistant", "content": ""})
                try:
                    if first is not None:
                        yield completion.chunk({"content": first})
                    for piece in pieces:
                        yield completion.chunk({"content": piece})
                    yield completion.chunk({}, ending.get("finish_reason", "stop"))
                    if with_usage and "usage" in ending:
                        yield completion.usage_chunk(ending["usage"])
                except RuntimeError as exc:
                    yield error_event(str(exc))
                yield DONE

            return StreamingResponse(events(), media_type="text/event-stream")
        text = (first or "") + "".join(pieces)
        return completion.whole(text, ending.get("finish_reason", "stop"), ending.get("usage"))

    return app


def main() -> None:
    import uvicorn

    settings = get_settings()
    uvicorn.run(create_app(), host=settings.inference_host, port=settings.inference_port, log_level="info")


if __name__ == "__main__":
    main()
