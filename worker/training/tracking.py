"""Trackers fed from inside the Trainer: TensorBoard event files beside the checkpoints (always), and an MLflow
run when a tracking server is set. Neither can fail the training: TensorBoard writes local files, and MLflow's
first failure is reported as an event on the job and ends its tracking for this attempt."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from app.jobs import tracking
from worker.protocol import event
from worker.training.callbacks import LOGGED


class TrackingCallback(TrainerCallback):  # type: ignore[misc]
    def __init__(self, config: dict[str, Any]) -> None:
        from tensorboardX import SummaryWriter

        self.board = SummaryWriter(logdir=config["tensorboard_dir"], flush_secs=5)
        self.job_dir = Path(config["job_dir"])
        self.mlflow_config: dict[str, Any] | None = config.get("mlflow")
        self.mlflow: tracking.Mlflow | None = None
        self.run: tracking.MlflowRun | None = None
        self.params = config.get("params") or {}

    def _down(self, exc: Exception) -> None:
        event("tracker_down", tracker="MLflow", detail=str(exc)[:300])
        if self.mlflow is not None:
            self.mlflow.close()
        self.mlflow = None

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        for key, value in self.params.items():
            self.board.add_text(f"spec/{key}", value, 0)
        if not self.mlflow_config:
            return
        self.mlflow = tracking.Mlflow(self.mlflow_config["uri"], guarded=bool(self.mlflow_config.get("guarded")))
        try:
            self.run = tracking.saved_run(self.job_dir)  # a resumed attempt goes on logging to the same run
            if self.run is None or self.run.uri != self.mlflow.uri:
                self.run = self.mlflow.start(
                    self.mlflow_config["experiment"],
                    self.mlflow_config["run_name"],
                    {
                        "refinery.job_url": self.mlflow_config["job_url"],
                        "refinery.job_id": self.mlflow_config["job_id"],
                    },
                )
                tracking.save_run(self.job_dir, self.run)
                self.mlflow.log(self.run.run_id, params=self.params)
            event("tracker_logging", tracker="MLflow", url=self.run.url)
        except tracking.TrackerDown as exc:
            self._down(exc)

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any) -> None:
        values = [
            (key.replace("/", "_"), float(value))
            for key, value in (logs or {}).items()
            if key in LOGGED and isinstance(value, int | float) and math.isfinite(value)
        ]
        if not values:
            return
        for key, value in values:
            self.board.add_scalar(f"train/{key}", value, state.global_step)
        if self.mlflow is not None and self.run is not None:
            try:
                self.mlflow.log(self.run.run_id, metrics=[(k, v, state.global_step) for k, v in values])
            except tracking.TrackerDown as exc:
                self._down(exc)

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.board.flush()  # not closed: the evaluation after the last step still logs
