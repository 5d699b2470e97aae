"""How the inference process shares its one model between requests: a lock served in turns per user, and a
request's generation as a queue of text pieces that its client can abandon."""

from __future__ import annotations

import queue
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Iterator
from typing import Any, Protocol


class Cancellable(Protocol):
    def is_set(self) -> bool: ...


class FairLock:
    """The model runs one request at a time; waiting requests are served in turns per user (round robin), so
    one user's queue of long requests cannot make another user wait behind all of them. A waiter whose client
    goes away (``cancel``) leaves the queue."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._holder: object | None = None
        self._served = ""  # whose request holds (or last held) the model
        self._waiting: OrderedDict[str, deque[object]] = OrderedDict()

    def waiting(self) -> int:
        with self._cond:
            return sum(len(q) for q in self._waiting.values())

    def acquire(self, who: str, cancel: Cancellable) -> bool:
        token = object()
        with self._cond:
            if self._holder is None and not self._waiting:
                self._holder, self._served = token, who
                return True
            self._waiting.setdefault(who, deque()).append(token)
            while self._holder is not token:
                if cancel.is_set():
                    line = self._waiting.get(who)
                    if line is not None and token in line:
                        line.remove(token)
                        if not line:
                            del self._waiting[who]
                    return False
                self._cond.wait(0.1)
            return True

    def release(self) -> None:
        with self._cond:
            self._holder = None
            if self._waiting:
                # the first waiting user other than the one just served; that one only when nobody else waits
                who = next((w for w in self._waiting if w != self._served), self._served)
                line = self._waiting[who]
                self._holder, self._served = line.popleft(), who
                if line:
                    self._waiting.move_to_end(who)  # their next request waits for everyone else's turn
                else:
                    del self._waiting[who]
            self._cond.notify_all()


_END = object()


class Generation:
    """One request's answer, produced on a thread of its own: text pieces arrive in a queue as the model writes
    them. ``cancel`` (a client that disconnected) stops it at the next token and frees the model."""

    def __init__(self) -> None:
        self.cancel = threading.Event()
        self.ending: dict[str, Any] = {}
        self._queue: queue.Queue[object] = queue.Queue()

    def put(self, item: object) -> None:
        """A piece of text, or the exception that ended the generation."""
        self._queue.put(item)

    def finish(self) -> None:
        self._queue.put(_END)

    def pieces(self) -> Iterator[str]:
        while True:
            item = self._queue.get()
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            yield str(item)


class ContextTooLong(ValueError):
    """The prompt does not fit the model's context (OpenAI's ``context_length_exceeded``)."""

    def __init__(self, tokens: int | None, context: int) -> None:
        counted = f"{tokens} tokens" if tokens is not None else f"over {context} tokens"
        super().__init__(
            f"This model's maximum context length is {context} tokens. However, your messages resulted in "
            f"{counted}. Please reduce the length of the messages."
        )


def time_budget(seconds: float, generations: list[Generation]) -> tuple[Any, threading.Event]:
    """Stopping criteria for ``generate``: stop at the time budget (the event says it was reached) or once
    every one of these requests' clients has gone."""
    import torch
    from transformers import StoppingCriteria, StoppingCriteriaList

    deadline = time.monotonic() + seconds
    timed_out = threading.Event()

    class Budget(StoppingCriteria):  # type: ignore[misc]
        def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
            late = time.monotonic() > deadline
            if late:
                timed_out.set()
            stop = late or all(g.cancel.is_set() for g in generations)
            return torch.full((input_ids.shape[0],), stop, dtype=torch.bool, device=input_ids.device)

    return StoppingCriteriaList([Budget()]), timed_out
