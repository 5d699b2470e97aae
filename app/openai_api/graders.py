"""/v1/fine_tuning/alpha/graders: run a grader on one model sample, or validate it (OpenAI's endpoints; the
official client's ``client.fine_tuning.alpha.graders``). The same graders score evaluations next."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field

from app.core.deps import SessionDep, csrf_protect
from app.core.errors import InvalidInput
from app.evaluation.judges import check_grader_models
from app.graders import library
from app.graders.checks import GraderInvalid, validate
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


def _checked(grader: Any, session: Any) -> None:
    try:
        validate(grader)
    except GraderInvalid as exc:
        raise InvalidInput(str(exc), field=exc.field) from None
    check_grader_models(session, grader)


@router.post("/run", summary="Run a grader on one model sample (every grader type; model graders ask a judge)")
def run_grader(body: GraderRunRequest, session: SessionDep, user: CurrentUser) -> dict[str, Any]:
    """Plain def: a python grader's sandbox child, or a judge's answer, is waited for in a worker thread, never on
    the event loop, and with no transaction open (the judges are read first)."""
    _checked(body.grader, session)
    result = library.try_grader(session, body.grader, output_text=body.model_sample, item=body.item)
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
            "sampled_model_name": result.sampled_model,
        },
        "sub_rewards": dict(result.sub_scores),
        "model_grader_token_usage_per_model": {},
    }


@router.post("/validate", summary="Check a grader (templates, formula, python source) without running it")
def validate_grader(body: GraderValidateRequest, session: SessionDep, user: CurrentUser) -> dict[str, Any]:
    _checked(body.grader, session)
    return {"grader": body.grader.model_dump(mode="json", exclude_none=True)}
