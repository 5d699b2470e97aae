"""``integrations`` on /v1/fine_tuning/jobs: OpenAI's list names Weights & Biases; Refinery takes its own tracker
types instead. ``{"type": "mlflow", "mlflow": {"experiment": …, "tracking_uri": …}}`` logs the job to an MLflow
server (the install's when no URI is given); ``{"type": "tensorboard"}`` is accepted and always on (event files
beside the checkpoints, downloadable from the job)."""

from __future__ import annotations

from typing import Any

from app.core.errors import InvalidInput
from app.core.i18n import _

TYPES = ("mlflow", "tensorboard")


def spec_fields(integrations: list[dict[str, Any]] | None) -> dict[str, str]:
    """The spec fields the integrations set (validated with the rest of the spec)."""
    fields: dict[str, str] = {}
    for index, item in enumerate(integrations or []):
        kind = str(item.get("type", ""))[:40]
        if kind not in TYPES:
            raise InvalidInput(
                _(
                    "Integration %(index)s: type %(kind)s is not one Refinery sends to; use mlflow (with "
                    "mlflow.experiment and optionally mlflow.tracking_uri) or tensorboard.",
                    index=index,
                    kind=kind or "''",
                ),
                code="unsupported_integration",
                field=f"integrations[{index}].type",
            )
        if kind == "mlflow":
            options = item.get("mlflow") or {}
            if not isinstance(options, dict):
                raise InvalidInput(_("integrations[].mlflow is an object."), field=f"integrations[{index}].mlflow")
            if options.get("experiment"):
                fields["mlflow_experiment"] = str(options["experiment"])
            if options.get("tracking_uri"):
                fields["mlflow_tracking_uri"] = str(options["tracking_uri"])
    return fields


def described(spec: dict[str, Any]) -> list[dict[str, Any]]:
    """A job's integrations as /v1 shows them: TensorBoard always, MLflow when the job names its own."""
    found: list[dict[str, Any]] = [{"type": "tensorboard"}]
    if spec.get("mlflow_experiment") or spec.get("mlflow_tracking_uri"):
        options = {
            "experiment": spec.get("mlflow_experiment") or None,
            "tracking_uri": spec.get("mlflow_tracking_uri") or None,
        }
        found.append({"type": "mlflow", "mlflow": options})
    return found
