"""Experiment tracking in MLflow, through its REST API (the tracking server is the user's; nothing of MLflow is
installed beside Refinery). A job's run lives under an experiment named after its dataset (or a name the user
gives); the training child logs the spec as params and every logged step's metrics, the worker adds the adapter,
the model card and the evaluation report's numbers. A tracker that is down never fails a job: each call has a
short timeout, and the first failure is noted on the job and ends its tracking."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from app.core.config import get_settings
from app.core.outbound import OutboundRefused, guarded_client

TIMEOUT = httpx.Timeout(5.0, connect=2.0)
PARAM_LIMIT = 500  # characters of a param's value that every MLflow version accepts
BATCH = 100  # params (and metrics) per log-batch call: MLflow's limit for params
STATE_FILE = "mlflow.json"  # in the job's directory: the run this job logs to, kept across attempts


class TrackerDown(Exception):
    """The tracking server did not answer, or refused a call."""


def tracking_uri(spec: dict[str, Any]) -> tuple[str, bool]:
    """The job's own tracking URI, else the install's (REFINERY_MLFLOW_TRACKING_URI), else none; and whether it
    is user-given (then every request passes the outbound check, as a judge's do)."""
    install = get_settings().mlflow_tracking_uri.rstrip("/")
    own = str(spec.get("mlflow_tracking_uri") or "").rstrip("/")
    return (own, own != install) if own else (install, False)


def flat(spec: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """A spec as MLflow params: nested keys joined with dots, values as text cut to what every server takes."""
    out: dict[str, str] = {}
    for key, value in spec.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flat(value, f"{name}."))
        elif value not in (None, "", [], {}):
            text = value if isinstance(value, str) else json.dumps(value)
            out[name] = text[:PARAM_LIMIT]
    return out


@dataclass
class MlflowRun:
    uri: str
    experiment_id: str
    run_id: str
    artifact_uri: str
    guarded: bool = False  # a user-given server: requests pass the outbound check

    @property
    def url(self) -> str:
        return f"{self.uri}/#/experiments/{self.experiment_id}/runs/{self.run_id}"

    def as_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "url": self.url}


class Mlflow:
    def __init__(self, uri: str, *, guarded: bool = False) -> None:
        self.uri = uri.rstrip("/")
        self.guarded = guarded
        options: dict[str, Any] = {"timeout": TIMEOUT, "trust_env": False}
        self.http = guarded_client(**options) if guarded else httpx.Client(**options)

    def close(self) -> None:
        self.http.close()

    def _call(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        try:
            response = self.http.request(method, f"{self.uri}{path}", **kwargs)
        except httpx.HTTPError as exc:
            raise TrackerDown(f"{self.uri} did not answer ({exc.__class__.__name__})") from exc
        except OutboundRefused as exc:
            raise TrackerDown(exc.reason) from exc
        if response.status_code >= 400:
            raise TrackerDown(f"{self.uri} answered {response.status_code}: {response.text[:200]}")
        return dict(response.json()) if response.content else {}

    def _api(self, method: str, endpoint: str, **kwargs: Any) -> dict[str, Any]:
        return self._call(method, f"/api/2.0/mlflow/{endpoint}", **kwargs)

    def experiment(self, name: str) -> str:
        """The experiment's id, created when it does not exist."""
        try:
            found = self._api("GET", "experiments/get-by-name", params={"experiment_name": name})
            return str(found["experiment"]["experiment_id"])
        except TrackerDown as exc:
            if "RESOURCE_DOES_NOT_EXIST" not in str(exc):
                raise
        return str(self._api("POST", "experiments/create", json={"name": name})["experiment_id"])

    def start(self, experiment: str, run_name: str, tags: dict[str, str]) -> MlflowRun:
        body = {
            "experiment_id": self.experiment(experiment),
            "run_name": run_name,
            "start_time": int(time.time() * 1000),
            "tags": [{"key": k, "value": v} for k, v in tags.items()],
        }
        info = self._api("POST", "runs/create", json=body)["run"]["info"]
        ids = str(info["experiment_id"]), str(info["run_id"])
        return MlflowRun(self.uri, *ids, str(info.get("artifact_uri", "")), guarded=self.guarded)

    def log(
        self,
        run_id: str,
        *,
        params: dict[str, str] | None = None,
        metrics: Iterable[tuple[str, float, int]] = (),
    ) -> None:
        now = int(time.time() * 1000)
        rows = [{"key": k, "value": v, "timestamp": now, "step": step} for k, v, step in metrics]
        pairs = [{"key": k, "value": v} for k, v in (params or {}).items()]
        for start in range(0, max(len(rows), len(pairs)), BATCH):
            body = {"run_id": run_id, "metrics": rows[start : start + BATCH], "params": pairs[start : start + BATCH]}
            self._api("POST", "runs/log-batch", json=body)

    def finish(self, run_id: str, status: str = "FINISHED") -> None:
        self._api("POST", "runs/update", json={"run_id": run_id, "status": status, "end_time": int(time.time() * 1000)})

    def upload(self, run: MlflowRun, name: str, content: bytes) -> None:
        """An artifact, through the server's artifact proxy (``mlflow server`` serves artifacts by default)."""
        if not run.artifact_uri.startswith("mlflow-artifacts:"):
            raise TrackerDown(f"the server stores artifacts at {run.artifact_uri[:80]}, which it does not proxy")
        where = run.artifact_uri.removeprefix("mlflow-artifacts:").lstrip("/")
        self._call("PUT", f"/api/2.0/mlflow-artifacts/artifacts/{where}/{quote(name)}", content=content)


def saved_run(job_dir: Path) -> MlflowRun | None:
    path = job_dir / STATE_FILE
    if not path.is_file():
        return None
    data = json.loads(path.read_text())
    return MlflowRun(
        data["uri"], data["experiment_id"], data["run_id"], data["artifact_uri"], bool(data.get("guarded"))
    )


def save_run(job_dir: Path, run: MlflowRun) -> None:
    (job_dir / STATE_FILE).write_text(json.dumps(run.as_dict()))


def job_url(job_id: uuid.UUID | str) -> str:
    settings = get_settings()
    base = settings.public_url.rstrip("/") or f"http://{settings.host}:{settings.port}"
    return f"{base}/jobs/{job_id}"


ARTIFACT_LIMIT = 2 * 1024**3  # a full fine-tune's weights above this stay in Refinery (the card still goes)


def _recorded(result: dict[str, Any] | None) -> MlflowRun | None:
    found = (result or {}).get("mlflow")
    if not found:
        return None
    return MlflowRun(
        found["uri"], found["experiment_id"], found["run_id"], found["artifact_uri"], bool(found.get("guarded"))
    )


def finish_training(final_dir: Path, card: str, result: dict[str, Any]) -> str | None:
    """After a job succeeded: its adapter and model card as artifacts of its MLflow run, which is then marked
    finished. Returns why that failed, or None."""
    run = _recorded(result)
    if run is None:
        return None
    client = Mlflow(run.uri, guarded=run.guarded)
    try:
        files = [p for p in sorted(final_dir.rglob("*")) if p.is_file() and p.suffix not in (".bin", ".pt", ".pkl")]
        if sum(p.stat().st_size for p in files) <= ARTIFACT_LIMIT:
            for path in files:
                client.upload(run, f"adapter/{path.relative_to(final_dir).as_posix()}", path.read_bytes())
        client.upload(run, "README.md", card.encode())
        client.finish(run.run_id)
    except (TrackerDown, OSError) as exc:
        return str(exc)[:300]
    finally:
        client.close()
    return None


def log_evaluation(result: dict[str, Any] | None, summary: dict[str, Any], step: int) -> str | None:
    """The evaluation report's numbers (each variant's scores, the graders' pass rates) on the job's MLflow run."""
    run = _recorded(result)
    if run is None:
        return None
    metrics: list[tuple[str, float, int]] = []
    for variant, scores in (summary.get("scores") or {}).items():
        for name, value in (scores or {}).items():
            if isinstance(value, int | float):
                metrics.append((f"eval.{variant}.{name}", float(value), step))
    for variant, graded in ((summary.get("graders") or {}).get("variants") or {}).items():
        if graded.get("total"):
            metrics.append((f"eval.{variant}.graders_pass_rate", graded["passed"] / graded["total"], step))
    client = Mlflow(run.uri, guarded=run.guarded)
    try:
        client.log(run.run_id, metrics=metrics)
    except TrackerDown as exc:
        return str(exc)[:300]
    finally:
        client.close()
    return None


def run_link(job_dir: Path) -> str | None:
    """The job's MLflow run in MLflow's own pages, once the training child has started it."""
    run = saved_run(job_dir)
    return run.url if run else None
