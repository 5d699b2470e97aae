"""Side-by-side answers generated together: the playground's two requests of one comparison carry the same
``pair`` id; the first waits briefly for the second, and the second's thread generates both in one batch
(left-padded prompts, PEFT's mixed-adapter batches: each row with its own LoRA adapter, or none for the base
model), each row's text streamed to its own request as it is written. Two answers then take about the time of
one instead of B waiting for A.

Only what one model object can serve is batched: the same base weights, each side the base or a LoRA adapter
(not DoRA, which PEFT cannot mix in a batch), the same sampling settings. Anything else, or a partner that
does not come within ``PAIR_WAIT`` seconds, is answered one after the other as before."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from typing import Any

from app.inference.shapes import usage
from worker.inference.scheduling import ContextTooLong, Generation, time_budget

PAIR_WAIT = 2.0  # seconds the first of a pair waits for the second (the browser sends them together)
BASE_ROW = "__base__"  # PEFT's name for "no adapter" in a mixed batch


@dataclass
class Slot:
    request: Any
    generation: Generation
    taken: threading.Event = field(default_factory=threading.Event)


class Rendezvous:
    """Where the two halves of a pair meet, keyed by (user, pair id)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiting: dict[tuple[str, str], Slot] = {}

    def meet(self, request: Any, generation: Generation, wait: float = PAIR_WAIT) -> Slot | bool | None:
        """The partner's slot (this thread answers both), None (no partner came: answer alone), or False (the
        partner took this request: its thread answers it)."""
        key = (request.user, request.pair)
        with self._lock:
            partner = self._waiting.pop(key, None)
            if partner is not None:
                partner.taken.set()
                return partner
            mine = self._waiting[key] = Slot(request, generation)
        if mine.taken.wait(wait):
            return False
        with self._lock:
            if self._waiting.get(key) is mine:
                del self._waiting[key]
                return None
        return False  # taken between the wait's end and the lock


def batchable(first: Any, second: Any) -> bool:
    """Whether two resolved targets can be generated as one batch on one model."""
    if first.full_dir is not None or second.full_dir is not None or first.base_dir != second.base_dir:
        return False
    for target in (first, second):
        if target.adapter_dir is not None:
            config = json.loads((target.adapter_dir / "adapter_config.json").read_text())
            if str(config.get("peft_type", "LORA")) != "LORA" or config.get("use_dora"):
                return False
    return True


def same_sampling(first: Any, second: Any) -> bool:
    keys = ("temperature", "top_p", "max_tokens", "seed")
    return all(getattr(first, k) == getattr(second, k) for k in keys)


class RowStreamer:
    """A generation streamer for a batch: each row's new tokens decoded and handed to its request as text,
    up to the row's end-of-answer token (the rows that ended earlier get padding after it)."""

    def __init__(self, tokenizer: Any, generations: list[Generation], stops: set[int]) -> None:
        self.tokenizer = tokenizer
        self.generations = generations
        self.stops = stops
        self.prompt_seen = False
        self.ids: list[list[int]] = [[] for _ in generations]
        self.counts = [0 for _ in generations]  # tokens generated, the end-of-answer token included
        self.sent = ["" for _ in generations]
        self.ended = [False for _ in generations]

    def put(self, value: Any) -> None:
        if not self.prompt_seen:  # the first call holds the prompts
            self.prompt_seen = True
            return
        tokens = value.reshape(len(self.generations), -1)[:, -1].tolist()
        for row, token in enumerate(tokens):
            if self.ended[row]:
                continue
            self.counts[row] += 1
            if token in self.stops:
                self.ended[row] = True
                continue
            self.ids[row].append(int(token))
            self._send(row)

    def _send(self, row: int) -> None:
        text = self.tokenizer.decode(self.ids[row], skip_special_tokens=True)
        if text.endswith("\ufffd"):  # a character cut between tokens: wait for its rest
            return
        if len(text) > len(self.sent[row]):
            self.generations[row].put(text[len(self.sent[row]) :])
            self.sent[row] = text

    def end(self) -> None:
        for row in range(len(self.generations)):
            text = self.tokenizer.decode(self.ids[row], skip_special_tokens=True)
            if len(text) > len(self.sent[row]):
                self.generations[row].put(text[len(self.sent[row]) :])
                self.sent[row] = text


def generate_batch(cache: Any, max_seconds: float, halves: list[tuple[Any, Any, Generation]]) -> None:
    """The two answers of a pair in one ``generate``: prompts padded on the left, each row with its own
    adapter (PEFT's ``adapter_names``; the base model is its ``__base__``)."""
    import torch

    for _req, target, _gen in sorted(halves, key=lambda h: h[1].adapter_dir is None):  # adapters first
        cache.model_for(target)  # loaded (the first adapter wraps the base model in PEFT)
    loaded = [cache.model_for(target) for _req, target, _gen in halves]
    model, tokenizer = loaded[-1][0], loaded[-1][1]
    if any(m is not model for m, _t, _n in loaded):
        raise RuntimeError("the pair's models are not one model")  # _one_batch() rules this out
    names = [name for _m, _t, name in loaded]
    request, target = halves[0][0], halves[0][1]
    if target.chat_template:
        tokenizer.chat_template = target.chat_template
    prompts = [
        tokenizer.apply_chat_template(
            [m.model_dump(include={"role", "content"}) for m in req.messages],
            add_generation_prompt=True,
            tokenize=False,
        )
        for req, _target, _gen in halves
    ]
    lengths = [len(tokenizer(p, add_special_tokens=False)["input_ids"]) for p in prompts]
    if max(lengths) >= target.context:
        raise ContextTooLong(max(lengths), target.context)
    side, tokenizer.padding_side = tokenizer.padding_side, "left"
    try:
        inputs = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
    finally:
        tokenizer.padding_side = side
    budget = min(request.max_tokens, target.context - max(lengths))
    stops = model.generation_config.eos_token_id
    stops = set(stops if isinstance(stops, list) else [stops]) | {tokenizer.eos_token_id}
    generations = [gen for _req, _target, gen in halves]
    streamer = RowStreamer(tokenizer, generations, stops)
    budget_stop, timed_out = time_budget(max_seconds, generations)

    kwargs: dict[str, Any] = {
        **inputs,
        "max_new_tokens": budget,
        "do_sample": request.temperature > 0,
        "streamer": streamer,
        "stopping_criteria": budget_stop,
        "pad_token_id": tokenizer.pad_token_id or tokenizer.eos_token_id,
    }
    if request.temperature > 0:
        kwargs.update(temperature=request.temperature, top_p=request.top_p)
    if hasattr(model, "peft_config"):
        kwargs["adapter_names"] = [name or BASE_ROW for name in names]
    if request.seed is not None:
        torch.manual_seed(request.seed)
    try:
        with torch.no_grad():
            model.generate(**kwargs)
    except Exception as exc:
        raise RuntimeError(str(exc)) from exc
    for row, gen in enumerate(generations):
        full = streamer.counts[row] >= budget and not streamer.ended[row]
        gen.ending["finish_reason"] = "length" if full or timed_out.is_set() else "stop"
        gen.ending["usage"] = usage(lengths[row], streamer.counts[row])
