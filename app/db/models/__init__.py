"""Every ORM class, one module per aggregate (imported here so Alembic sees them all)."""

from app.db.models.base_model import BaseModelRecord, ModelStatus
from app.db.models.cleaning import Cleaning, CleaningOverride, CleaningRecipe
from app.db.models.completion import StoredCompletion
from app.db.models.dataset import Dataset, DatasetStatus, DatasetVersion, Upload
from app.db.models.deployment import Deployment, DeploymentEvent, Promotion
from app.db.models.evals import EvalDefinition, EvalRun, SavedGrader
from app.db.models.evaluation import Evaluation, Judge, Judgement, SampleLabel
from app.db.models.feedback import Feedback
from app.db.models.job import TrainingJob, TrainingPreset
from app.db.models.run import Run, RunEvent, RunStatus
from app.db.models.user import ApiKey, LoginSession, Role, User

__all__ = [
    "ApiKey",
    "BaseModelRecord",
    "Cleaning",
    "CleaningOverride",
    "CleaningRecipe",
    "Dataset",
    "DatasetStatus",
    "DatasetVersion",
    "Deployment",
    "DeploymentEvent",
    "EvalDefinition",
    "EvalRun",
    "Evaluation",
    "Feedback",
    "Judge",
    "Judgement",
    "LoginSession",
    "ModelStatus",
    "Promotion",
    "Role",
    "Run",
    "RunEvent",
    "RunStatus",
    "SampleLabel",
    "SavedGrader",
    "StoredCompletion",
    "TrainingJob",
    "TrainingPreset",
    "Upload",
    "User",
]
