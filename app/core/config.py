"""One settings object for web, worker and CLI (prefix ``REFINERY_``).

Nothing else in the code reads ``os.environ``: everything configurable is a field here.
"""

from __future__ import annotations

import os
import secrets
from functools import lru_cache
from pathlib import Path

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

_PLACEHOLDER_SECRETS = {"changeme", "change-me", "secret", "changethis", "password", "default"}


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="REFINERY_", extra="ignore")

    data_dir: Path = Field(
        default=Path("data"),
        description="Local directory holding the SQLite database, the embedded broker and the artifact store.",
    )
    database_url: str = Field(
        default="",
        description="SQLAlchemy URL. Empty means SQLite at <data_dir>/refinery.db; "
        "use postgresql+psycopg://user@host/db for production.",
    )
    broker_url: str = Field(
        default="",
        description="Celery broker URL. Empty means the embedded filesystem transport under <data_dir>/broker; "
        "use redis://host:6379/0 for production.",
    )
    secret_key: str = Field(
        default="",
        description="Signs session cookies. Empty means a per-install key generated at "
        "<data_dir>/secret_key (mode 0600) on first run.",
    )
    host: str = Field(default="127.0.0.1", description="Address the web app listens on.")
    port: int = Field(default=8000, description="Port the web app listens on.")
    public_url: str = Field(
        default="",
        description="The address people open Refinery at (links from MLflow runs back to jobs). Empty means "
        "http://<host>:<port>.",
    )
    store_deployment_traffic: bool = Field(
        default=False,
        description="Keep every answer served through a deployment (as store=true would), for review on Traffic.",
    )
    stored_completion_retention_days: int = Field(
        default=0, ge=0, description="Delete stored chat completions older than this many days; 0 keeps them."
    )
    mlflow_tracking_uri: str = Field(
        default="",
        description="An MLflow tracking server (http:// or https://) every job logs its params, metrics, adapter "
        "and evaluation to; a job's spec may name another. Empty means no MLflow.",
    )
    queue_prefix: str = Field(default="refinery", description="Prefix of the Celery queue names (tests use their own).")
    lease_ttl_seconds: float = Field(
        default=60.0, description="A running job whose heartbeat is older than this is presumed dead."
    )
    heartbeat_seconds: float = Field(default=5.0, description="How often a worker renews its lease.")
    pause_grace_seconds: float = Field(
        default=900.0,
        gt=0,
        description="How long a paused job's child may take to reach and save its next checkpoint before it is "
        "stopped anyway (it then resumes from its previous checkpoint).",
    )
    reconcile_seconds: float = Field(default=10.0, description="How often the reconciler sweeps for stale runs.")
    requeue_after_seconds: float = Field(
        default=120.0,
        description="A queued run that nobody picked up for this long is sent to the broker again.",
    )
    broker_visibility_timeout_seconds: float = Field(
        default=3600.0,
        description="Redis: an unacknowledged message is delivered again after this long (messages are "
        "acknowledged on receipt and the run's lease guards against a second execution).",
    )
    max_attempts: int = Field(default=3, description="A run that dies this many times is marked failed.")
    hub_endpoint: str = Field(
        default="https://huggingface.co",
        description="Hugging Face hub used for 'hub id + revision' model imports (set empty to disable).",
    )
    outbound_allow_hosts: str = Field(
        default="",
        description="Hosts (or host:port) on loopback or private networks that user-given URLs such as judges' "
        "endpoints may reach, comma-separated; every other such address is refused.",
    )
    hub_timeout_seconds: float = Field(default=3.0, description="How long to wait for the hub to answer.")
    session_max_age_seconds: int = Field(default=14 * 24 * 3600, description="Login session lifetime.")
    login_free_failures_per_account: int = Field(
        default=5, ge=1, description="Wrong passwords for one account before each further one doubles its wait."
    )
    login_free_failures_per_address: int = Field(
        default=20, ge=1, description="Wrong logins from one address before each further one doubles its wait."
    )
    login_max_delay_seconds: float = Field(
        default=900.0, gt=0, description="The longest wait a run of wrong logins imposes, in seconds."
    )
    web_threads: int = Field(
        default=16,
        ge=1,
        le=200,
        description="Threads the web process runs request handlers on (each may hold a database connection).",
    )
    db_pool_timeout_seconds: float = Field(
        default=5.0,
        gt=0,
        description="How long a request waits for a database connection before it is answered 503 (busy).",
    )
    https_cookies: bool = Field(default=False, description="Mark cookies Secure (behind HTTPS).")
    import_bundled_model: bool = Field(
        default=True, description="Import the bundled SmolLM2-135M-Instruct on start-up when it is missing."
    )
    max_upload_bytes: int = Field(
        default=2 * 1024**3, description="Largest dataset upload accepted, in bytes (413 past it)."
    )
    max_decompressed_bytes: int = Field(
        default=8 * 1024**3,
        ge=1024,
        description="Largest size an upload may expand to when decompressed (gzip, Parquet pages), in bytes.",
    )
    max_decompression_ratio: float = Field(
        default=100.0,
        ge=1,
        description="Past its first 16 MiB, a compressed upload may expand to at most this many times its size "
        "(text compresses about 3-10x; a decompression bomb thousands of times).",
    )
    max_record_bytes: int = Field(
        default=8 * 1024**2,
        ge=1024,
        description="Largest single record (a line, an array element, a row), in bytes; checked before it is "
        "parsed or tokenised.",
    )
    max_columns: int = Field(default=1000, ge=1, description="Most columns a CSV or Parquet upload may have.")
    validation_memory_mb: int = Field(
        default=4096,
        ge=256,
        description="Address space a validation child may use, in MB; past it the upload fails with this setting "
        "named instead of the kernel killing the child.",
    )
    validation_cpu_seconds: int = Field(
        default=3600, ge=10, description="CPU seconds a validation child may use before the upload fails."
    )
    max_request_bytes: int = Field(default=1024**2, description="Largest request body for every other route, in bytes.")
    gpu_workers: bool = Field(
        default=False, description="Whether CUDA workers consume the gpu queue (enables QLoRA and 16-bit choices)."
    )
    workers: int = Field(default=2, description="Worker threads per Celery worker started by `refinery up`.")
    eval_sample_size: int = Field(
        default=20, ge=1, description="Test prompts answered and scored by the evaluation that follows training."
    )
    eval_max_new_tokens: int = Field(default=96, ge=1, description="Longest answer generated in that evaluation.")
    eval_loss_records: int = Field(
        default=100, ge=1, description="Test records scored for loss and perplexity in that evaluation."
    )
    eval_probe_size: int = Field(default=40, ge=0, le=40, description="General tasks of its forgetting check.")
    spare_training_child: bool = Field(
        default=True,
        description="A worker keeps one training child ready with torch imported, so that a job starts seconds "
        "sooner; it costs that child's memory (a few hundred MB) while idle.",
    )
    fork_children: bool = Field(
        default=True,
        description="Start training, evaluation and export children by forking a process that has imported "
        "torch, transformers, PEFT and TRL once (worker/forkserver.py), instead of each child importing them "
        "afresh: seconds of CPU saved per child, for the server's memory (a few hundred MB). Not on a machine "
        "whose GPUs the worker can see (CUDA does not survive a fork): there each child starts afresh.",
    )
    ner_model: Path | None = Field(
        default=None,
        description="A Hugging Face token-classification model directory (safetensors, PER labels) that the "
        "cleaning's PII step may use to find people's names; none is bundled.",
    )
    user_regex_timeout_seconds: float = Field(
        default=1.0,
        gt=0,
        le=60,
        description="The longest a user's regular expression (a cleaning rule) may run on one record; past it "
        "the run fails naming the record and the pattern.",
    )
    inference_url: str = Field(
        default="",
        description="OpenAI-compatible server that answers chat for the playground and /v1. Empty means Refinery's "
        "own inference process at 127.0.0.1:<inference_port>; or point it at vLLM started with --enable-lora.",
    )
    inference_port: int = Field(default=8001, description="Port of Refinery's own inference process.")
    inference_host: str = Field(
        default="127.0.0.1", description="Address the own inference process listens on (0.0.0.0 in a container)."
    )
    inference_api_key: str = Field(
        default="", description="Bearer key for an external inference server (the own process derives one)."
    )
    inference_max_seconds: float = Field(
        default=120.0,
        gt=0,
        le=3600,
        description="Longest one chat answer may generate, in seconds; past it the answer ends with "
        "finish_reason 'length' and the next request's turn comes.",
    )
    inference_max_models: int = Field(
        default=2, ge=1, description="Base models the inference process keeps loaded (least recently used leave)."
    )
    inference_max_adapters: int = Field(
        default=8, ge=1, description="Adapters kept loaded per base model (least recently used are unloaded)."
    )

    @field_validator("secret_key")
    @classmethod
    def _refuse_placeholder(cls, value: str) -> str:
        if value and (value.lower() in _PLACEHOLDER_SECRETS or len(value) < 32):
            raise ValueError(
                "REFINERY_SECRET_KEY is a placeholder or shorter than 32 characters; "
                "unset it to use the generated per-install key, or set a long random value."
            )
        return value

    @model_validator(mode="after")
    def _heartbeat_well_inside_the_lease(self) -> Settings:
        # a busy worker may miss a beat or two; with the heartbeat close to the lease, the reconciler would
        # hand a live job to a second worker
        if self.heartbeat_seconds * 3 > self.lease_ttl_seconds:
            raise ValueError(
                "REFINERY_HEARTBEAT_SECONDS must be at most a third of REFINERY_LEASE_TTL_SECONDS "
                f"({self.heartbeat_seconds} and {self.lease_ttl_seconds} now); lower the first or raise the second."
            )
        return self

    # --- derived locations -------------------------------------------------------------------------
    @property
    def allowed_outbound_hosts(self) -> list[str]:
        return [part.strip() for part in self.outbound_allow_hosts.split(",") if part.strip()]

    @property
    def inference_base_url(self) -> str:
        return (self.inference_url or f"http://127.0.0.1:{self.inference_port}").rstrip("/")

    def inference_key(self) -> str:
        """The key between the web and the inference server: the configured one (an external server's), else one
        derived from the install's secret (so that other local users cannot use the inference port)."""
        if self.inference_api_key:
            return self.inference_api_key
        import hashlib
        import hmac

        return hmac.new(self.resolved_secret_key().encode(), b"refinery-inference", hashlib.sha256).hexdigest()

    @property
    def root(self) -> Path:
        return self.data_dir.resolve()

    @property
    def artifacts_dir(self) -> Path:
        return self.root / "artifacts"

    @property
    def logs_dir(self) -> Path:
        return self.root / "logs"

    @property
    def sqlalchemy_url(self) -> str:
        return self.database_url or f"sqlite:///{self.root / 'refinery.db'}"

    @property
    def celery_broker_url(self) -> str:
        return self.broker_url or "filesystem://"

    @property
    def broker_folder(self) -> Path:
        return self.root / "broker"

    @property
    def is_embedded_broker(self) -> bool:
        return not self.broker_url or self.broker_url.startswith("filesystem")

    def queue(self, name: str) -> str:
        return f"{self.queue_prefix}.{name}"

    def ensure_dirs(self) -> None:
        for path in (self.root, self.artifacts_dir, self.logs_dir):
            path.mkdir(parents=True, exist_ok=True)
        if self.is_embedded_broker:
            (self.broker_folder / "queue").mkdir(parents=True, exist_ok=True)
            (self.broker_folder / "processed").mkdir(parents=True, exist_ok=True)
            (self.broker_folder / "control").mkdir(parents=True, exist_ok=True)

    def resolved_secret_key(self) -> str:
        """The configured secret, or the per-install key file (created with mode 0600 on first use)."""
        if self.secret_key:
            return self.secret_key
        path = self.root / "secret_key"
        if not path.exists():
            self.root.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(secrets.token_urlsafe(48))
        return path.read_text().strip()


@lru_cache
def get_settings() -> Settings:
    return Settings()
