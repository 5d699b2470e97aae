"""/v1/fine_tuning/alpha/graders: run a grader on one model sample, or validate it (OpenAI's endpoints; the
official client's ``client.fine_tuning.alpha.graders``). The same graders score evaluations next."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field

from app.core.deps import csrf_protect
from app.core.errors import InvalidInput
from app.graders.checks import GraderInvalid, validate
from app.graders.grade import grade
from app.graders.specs import Grader
from app.users.deps import CurrentUser

router = APIRouter(
    prefix="/v1/fine_tuning/alpha/graders", tags=["openai-compatible"], dependencies=[Depends(csrf_protect)]
)


class GraderRunRequest(BaseModel):
    grader: Grader
    model_sample: str = Field(
        max_length=1_000_000, description="The answer graded: sample.output_text (and output_json)."
    )
    item: dict[str, Any] = Field(default_factory=dict, description="The dataset item the templates read as item.")


class GraderValidateRequest(BaseModel):
    grader: Grader


def _checked(grader: Any) -> None:
    try:
        validate(grader)
    except GraderInvalid as exc:
        raise InvalidInput(str(exc), field=exc.field) from None


@router.post("/run", summary="Run a grader on one model sample (string_check, text_similarity, python, multi)")
def run_grader(body: GraderRunRequest, user: CurrentUser) -> dict[str, Any]:
    """Plain def: a python grader's sandbox child is waited for in a worker thread, never on the event loop."""
    _checked(body.grader)
    result = grade(body.grader, output_text=body.model_sample, item=body.item)
    # OpenAI's flags, each set one with its explanation beside it as '<flag>_details'
    errors: dict[str, Any] = {
        **dict(result.errors),
        "python_grader_runtime_error_details": None,
        "python_grader_server_error_type": None,
        "model_grader_server_error_details": None,
        **{f"{flag}_details": detail for flag, detail in result.details.items()},
    }
    scores = dict(result.sub_scores) or {result.name: result.score}
    return {
        "reward": result.score,
        "metadata": {
            "name": result.name,
            "type": result.type,
            "errors": errors,
            "execution_time": result.seconds,
            "scores": scores,
            "token_usage": None,
            "sampled_model_name": None,
        },
        "sub_rewards": dict(result.sub_scores),
        "model_grader_token_usage_per_model": {},
    }


@router.post("/validate", summary="Check a grader (templates, formula, python source) without running it")
def validate_grader(body: GraderValidateRequest, user: CurrentUser) -> dict[str, Any]:
    _checked(body.grader)
    return {"grader": body.grader.model_dump(mode="json", exclude_none=True)}
