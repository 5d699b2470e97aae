"""'Preview command' on the job form: the same job as a `refinery jobs create` call and as the /api/v1 request,
for the form as filled. Only the spec fields that differ from the defaults are written (the rest are the
defaults on either path), so what is shown is what was chosen."""

from __future__ import annotations

import json
import shlex
import uuid
from dataclasses import dataclass
from typing import Any

import yaml

from app.jobs.spec import TrainingSpec


@dataclass(frozen=True)
class Preview:
    body: dict[str, Any]  # the POST /api/v1/jobs body
    curl: str
    cli: str


def changed_fields(spec: TrainingSpec) -> dict[str, Any]:
    defaults = TrainingSpec().model_dump(mode="json")
    return {k: v for k, v in spec.model_dump(mode="json").items() if v != defaults.get(k)}


def preview(
    spec: TrainingSpec,
    *,
    model_id: uuid.UUID,
    version_id: uuid.UUID,
    name: str,
    general_version_id: uuid.UUID | None,
    base_url: str,
    email: str,
) -> Preview:
    body: dict[str, Any] = {"model_id": str(model_id), "dataset_version_id": str(version_id)}
    if name:
        body["name"] = name
    if general_version_id is not None:
        body["general_version_id"] = str(general_version_id)
    body["spec"] = changed_fields(spec)
    payload = json.dumps(body, ensure_ascii=False, indent=2)
    curl = (
        f"curl -X POST {shlex.quote(base_url.rstrip('/') + '/api/v1/jobs')} \\\n"
        '  -H "Authorization: Bearer $REFINERY_API_KEY" -H "Content-Type: application/json" \\\n'
        f"  -d {shlex.quote(payload)}"
    )
    args = [
        "refinery",
        "jobs",
        "create",
        "--owner",
        email,
        "--model",
        str(model_id),
        "--dataset-version",
        str(version_id),
    ]
    if name:
        args += ["--name", name]
    if general_version_id is not None:
        args += ["--general-version", str(general_version_id)]
    spec_yaml = yaml.safe_dump(body["spec"], sort_keys=False, allow_unicode=True) if body["spec"] else "{}\n"
    cli = " ".join(shlex.quote(a) for a in args) + " --spec - <<'SPEC'\n" + spec_yaml + "SPEC"
    return Preview(body=body, curl=curl, cli=cli)
