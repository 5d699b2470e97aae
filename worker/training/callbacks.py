"""Progress, metrics, complete-checkpoint markers and graceful stop, from inside the Trainer."""

from __future__ import annotations

import json
import math
import signal
import time
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from app.jobs.checkpoints import COMPLETE_MARKER
from worker.protocol import event, progress
from worker.training import failpoints

# the Trainer's logged numbers a job keeps (its metrics log, TensorBoard, MLflow)
LOGGED = (
    "loss",
    "eval_loss",
    "learning_rate",
    "grad_norm",
    "mean_token_accuracy",
    "eval_mean_token_accuracy",
    "rewards/accuracies",
    "rewards/margins",
    "reward",  # GRPO and RLOO: the mean reward of the step's answers, and its spread
    "reward_std",
    "grader_failed",  # reinforcement from a grader: the share of answers its grading failed on
)


class RefineryCallback(TrainerCallback):  # type: ignore[misc]
    """Writes one JSON line per logged step to ``metrics_path`` and reports progress to the supervisor.

    A checkpoint gets a marker file only after the Trainer has finished writing it: resume uses only
    marked checkpoints, so a kill in the middle of a save falls back to the previous complete one.
    SIGTERM (worker shutting down) saves a checkpoint and stops at the next step.
    """

    def __init__(self, metrics_path: Path) -> None:
        self.metrics_path = metrics_path
        self.started = time.monotonic()
        self.last_time = self.started
        self.last_tokens = 0
        self.stop_requested = False
        # wall-clock times of the training loop's start, and of the first optimizer step's start and end
        self.timeline: dict[str, float] = {}
        signal.signal(signal.SIGTERM, self._on_sigterm)

    def _on_sigterm(self, *_: Any) -> None:
        self.stop_requested = True

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.started = self.last_time = time.monotonic()
        self.last_tokens = int(getattr(state, "num_input_tokens_seen", 0) or 0)
        self.timeline.setdefault("loop_started", time.time())

    def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.timeline.setdefault("first_step_began", time.time())

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        self.timeline.setdefault("first_step", time.time())
        failpoints.check("kill_at_step", state.global_step)
        failpoints.check("oom_at_step", state.global_step)
        failpoints.check("disk_full_at_step", state.global_step)
        failpoints.check("wait_at_step", state.global_step)
        if self.stop_requested:
            control.should_save = True
            control.should_training_stop = True
        return control

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any) -> None:
        if not logs:
            return
        now = time.monotonic()
        tokens = int(getattr(state, "num_input_tokens_seen", 0) or 0)
        row: dict[str, Any] = {"step": state.global_step, "epoch": round(state.epoch or 0, 4), "time": time.time()}
        for key in LOGGED:
            value = logs.get(key)
            if isinstance(value, int | float) and math.isfinite(value):
                row[key.replace("/", "_")] = float(value)
        if tokens > self.last_tokens and now > self.last_time:
            row["tokens_per_second"] = round((tokens - self.last_tokens) / (now - self.last_time), 1)
            self.last_tokens, self.last_time = tokens, now
        if "loss" in row or "eval_loss" in row:  # not the end-of-training summary
            with self.metrics_path.open("a") as handle:
                handle.write(json.dumps(row) + "\n")
        total = max(1, state.max_steps)
        if "loss" in row:
            progress(
                min(0.99, state.global_step / total),
                "step_loss",
                step=state.global_step,
                total=total,
                loss=f"{row['loss']:.4f}",
            )
        else:
            progress(min(0.99, state.global_step / total), "step", step=state.global_step, total=total)

    def on_evaluate(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.last_time = time.monotonic()  # evaluation time is not training throughput

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        checkpoint = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        failpoints.check("kill_in_save", state.global_step)  # written by the Trainer, not yet marked complete
        if checkpoint.is_dir():
            (checkpoint / COMPLETE_MARKER).write_text(json.dumps({"step": state.global_step}))
            event("checkpoint_saved", step=state.global_step)
