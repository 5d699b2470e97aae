"""Child process: one training attempt. Resumes from the last complete checkpoint of an earlier attempt.

Reports progress and a classified failure through worker/protocol.py; the supervisor
(worker/lifecycle.py) owns the job's state.
"""

from __future__ import annotations

import errno
import importlib.util
import json
import random
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from app.datasets.template import renderer_for
from app.jobs.checkpoints import COMPLETE_MARKER, latest_complete_checkpoint
from app.jobs.estimate import checkpointed
from app.jobs.spec import Adapter, Method, TrainingSpec
from worker.protocol import emit, event, exit_with_parent, fail, is_main_process, progress
from worker.training.adapters import (
    apply_adapter,
    count_parameters,
    load_model,
    load_reward_model,
    start_from_adapter,
)
from worker.training.callbacks import RefineryCallback
from worker.training.data import (
    DataError,
    mix_general,
    mix_versions,
    read_records,
)
from worker.training.distributed import world_size
from worker.training.methods import PLANS, Context
from worker.training.methods import cpu_micro_batches as cpu_micro_batches  # (tests and benchmarks)
from worker.training.tracking import TrackingCallback

PROCESS_STARTED = time.time()  # this module is imported first thing in the training child


def _datasets(spec: TrainingSpec, job: dict[str, Any], renderer: Any) -> tuple[Any, Any]:
    from datasets import Dataset

    plan = PLANS[spec.method]
    kinds = plan.kinds(spec.method)
    path = Path(job["records_path"])
    # a separate validation file (the OpenAI-compatible API's validation_file) is used whole
    eval_path, eval_split = (
        (Path(job["eval_records_path"]), None) if job.get("eval_records_path") else (path, "validation")
    )
    train = plan.rows(spec, read_records(path, split="train", kinds=kinds), renderer)
    evaluation = (
        plan.rows(spec, read_records(eval_path, split=eval_split, kinds=kinds), renderer) if plan.evaluates else []
    )
    if spec.method == Method.cpt and job.get("general_records_path") and spec.cpt_general_ratio:
        general = plan.rows(spec, read_records(Path(job["general_records_path"]), split="train", kinds=kinds), renderer)
        train = mix_general(train, general, spec.cpt_general_ratio, spec.seed)
    if job.get("mix"):  # other dataset versions, each with its ratio (TrainingSpec.mix)
        own = len(train)
        train, counts = mix_versions(
            train,
            job["mix"],
            lambda path: plan.rows(spec, read_records(path, split="train", kinds=kinds), renderer),
            spec.seed,
        )
        event("dataset_mixed", own=own, mixed=", ".join(str(n) for n in counts), total=len(train))
    if not train:
        raise DataError("no_train_records")
    if spec.max_eval_records and len(evaluation) > spec.max_eval_records:  # the same sample at every evaluation
        evaluation = random.Random(spec.seed).sample(evaluation, spec.max_eval_records)  # noqa: S311
    return Dataset.from_list(train), (Dataset.from_list(evaluation) if evaluation else None)


def _common_args(spec: TrainingSpec, output_dir: Path, has_eval: bool, cuda: bool) -> dict[str, Any]:
    import torch

    bf16 = cuda and spec.precision in ("auto", "bf16") and torch.cuda.is_bf16_supported()
    fp16 = cuda and (spec.precision == "fp16" or (spec.precision == "auto" and not bf16))
    evaluate = has_eval and spec.eval_steps > 0
    return {
        "output_dir": str(output_dir),
        "learning_rate": spec.learning_rate,
        "num_train_epochs": spec.num_epochs,
        "max_steps": spec.max_steps if spec.max_steps > 0 else -1,
        "per_device_train_batch_size": spec.batch_size,
        "per_device_eval_batch_size": spec.batch_size,
        "gradient_accumulation_steps": spec.gradient_accumulation_steps,
        "lr_scheduler_type": spec.scheduler,
        "warmup_steps": float(spec.warmup_ratio),  # a float below 1 is a ratio of the total steps
        "weight_decay": spec.weight_decay,
        "max_grad_norm": spec.max_grad_norm,
        "bf16": bf16,
        "fp16": fp16,
        "logging_steps": 1,
        "eval_strategy": "steps" if evaluate else "no",
        "eval_on_start": evaluate,  # step 0: the base model's loss, the line the curve must get below
        "eval_steps": spec.eval_steps if evaluate else None,
        "save_strategy": "steps",
        "save_steps": spec.save_steps,
        "save_total_limit": spec.save_total_limit,
        "load_best_model_at_end": bool(evaluate and spec.early_stopping_patience),
        "metric_for_best_model": "eval_loss" if evaluate and spec.early_stopping_patience else None,
        "greater_is_better": False if evaluate and spec.early_stopping_patience else None,
        "seed": spec.seed,
        "report_to": [],
        "disable_tqdm": True,
        "use_cpu": not cuda,
        "dataloader_num_workers": 0,
        "include_num_input_tokens_seen": "non_padding",
        # recomputing activations saves GPU memory for a third more compute; on CPU, memory is not the limit.
        # The memory estimate counts activations by the same rule (app/jobs/estimate.py).
        "gradient_checkpointing": cuda and checkpointed(spec),
    }


def _trainer(
    spec: TrainingSpec,
    model: Any,
    tokenizer: Any,
    train: Any,
    evaluation: Any,
    output_dir: Path,
    callbacks: list[Any],
    cuda: bool,
    reward: tuple[Any, Any] | None = None,
) -> Any:
    args = _common_args(spec, output_dir, evaluation is not None, cuda)
    if spec.early_stopping_patience and args["eval_strategy"] != "no":
        from transformers import EarlyStoppingCallback

        callbacks.append(EarlyStoppingCallback(early_stopping_patience=spec.early_stopping_patience))
    common = {"train_dataset": train, "eval_dataset": evaluation, "processing_class": tokenizer, "callbacks": callbacks}
    return PLANS[spec.method].build(Context(spec, model, args, common, train, cuda, reward))


def run(job: dict[str, Any]) -> dict[str, Any] | None:
    """Trains; returns the result on the main process (None on the other ranks of a multi-GPU launch)."""
    timeline = {"process_started": PROCESS_STARTED, "run_called": time.time()}
    import datasets  # noqa: F401  (the heavy imports, here at once so the timeline shows what they cost)
    import peft  # noqa: F401
    import torch
    import trl  # noqa: F401
    from transformers import AutoTokenizer, set_seed

    timeline["imported"] = time.time()

    spec = TrainingSpec.model_validate(job["spec"])
    cuda = torch.cuda.is_available()
    if spec.adapter == Adapter.qlora and not cuda:
        raise DataError("qlora_no_cuda")
    if world_size() > 1 and spec.distributed.startswith("deepspeed") and importlib.util.find_spec("deepspeed") is None:
        raise DataError("deepspeed_missing")
    set_seed(spec.seed)
    model_dir = Path(job["model_dir"])
    output_dir = Path(job["output_dir"])
    output_dir.mkdir(parents=True, exist_ok=True)
    renderer = renderer_for(model_dir, job.get("chat_template"))
    if renderer is None:
        raise DataError("no_template")
    progress(0.0, "tokenising")
    train, evaluation = _datasets(spec, job, renderer)
    timeline["tokenised"] = time.time()
    progress(0.0, "loading_model")
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir), trust_remote_code=False)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if job.get("chat_template"):
        tokenizer.chat_template = job["chat_template"]  # the template the dataset pages showed
    reward = None
    try:
        base = load_model(model_dir, spec, cuda, pad_token_id=tokenizer.pad_token_id)
        if job.get("start_adapter_dir"):
            start = Path(job["start_adapter_dir"])
            if not (start / "adapter_config.json").is_file():
                raise DataError("start_adapter_missing")
            model = start_from_adapter(base, start, spec)
        else:
            model = apply_adapter(base, spec)
        if PLANS[spec.method].needs_reward and spec.grader is not None:  # reinforcement fine-tuning
            from app.graders.rewards import reward_function
            from worker.evaluation.eval_run import LazyEmbedder

            reward = (reward_function(spec.grader, LazyEmbedder()), None)
        elif PLANS[spec.method].needs_reward:
            if not job.get("reward"):
                raise DataError("no_reward_model")
            reward = load_reward_model(job["reward"], cuda)
    except (OSError, ValueError) as exc:
        if isinstance(exc, DataError):
            raise
        raise ModelLoadError(str(exc)) from exc
    timeline["model_loaded"] = time.time()
    trainable, total = count_parameters(model)
    metrics_path = Path(job["metrics_path"])
    callback = RefineryCallback(metrics_path)
    trackers = TrackingCallback(job["tracking"]) if job.get("tracking") and is_main_process() else None
    callbacks = [callback, trackers] if trackers else [callback]
    trainer = _trainer(spec, model, tokenizer, train, evaluation, output_dir, callbacks, cuda, reward)
    if job.get("resume_from") and latest_complete_checkpoint(output_dir) is None and is_main_process():
        _start_from_checkpoint(job["resume_from"], output_dir, metrics_path)
    if world_size() > 1:
        trainer.accelerator.wait_for_everyone()  # the other ranks look for the checkpoint rank 0 copied
    resume = latest_complete_checkpoint(output_dir)
    if resume is not None:
        progress(0.0, "resuming", checkpoint=resume.name)
        event("resuming", checkpoint=resume.name)
        # a checkpoint the platform did not finish writing is never resumed from
        for partial in output_dir.glob("checkpoint-*") if is_main_process() else ():
            if partial != resume and not (partial / COMPLETE_MARKER).exists():
                shutil.rmtree(partial, ignore_errors=True)
    event(
        "training_started",
        records=len(train),
        steps=_planned_steps(spec, len(train)),
        trainable=f"{trainable:,}",
        total=f"{total:,}",
    )
    started = time.monotonic()
    timeline["trainer_ready"] = time.time()
    result = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    if callback.stop_requested:
        sys.exit(75)  # stopped by the worker: the checkpoint is saved; the supervisor re-queues
    final_dir = Path(job["final_dir"])
    partial_final = final_dir.with_name(final_dir.name + ".partial")
    if is_main_process():
        shutil.rmtree(partial_final, ignore_errors=True)
    trainer.save_model(str(partial_final))  # every rank takes part (FSDP and ZeRO-3 gather the weights)
    evals = [row for row in trainer.state.log_history if "eval_loss" in row]
    eval_loss = evals[-1]["eval_loss"] if evals and evals[-1].get("step") == trainer.state.global_step else None
    if evaluation is not None and eval_loss is None:  # not evaluated at the last step yet
        eval_loss = trainer.evaluate().get("eval_loss")
    base_eval = next((row["eval_loss"] for row in evals if row.get("step") == 0), None)
    if not is_main_process():
        return None
    tokenizer.save_pretrained(str(partial_final))
    (partial_final / "training_args.bin").unlink(missing_ok=True)  # a pickle: never shipped with an adapter
    shutil.rmtree(final_dir, ignore_errors=True)
    partial_final.rename(final_dir)
    return {
        # a forward pass on rank 0 alone would wait for the other shards forever
        "probe_logits": probe_logits(trainer.model, tokenizer) if world_size() == 1 else None,
        "train_loss": result.training_loss,
        "eval_loss": eval_loss,
        "base_eval_loss": base_eval,
        "steps": trainer.state.global_step,
        "epochs": trainer.state.epoch,
        "trainable_parameters": trainable,
        "total_parameters": total,
        "resumed_from": resume.name if resume else None,
        "seconds": round(time.monotonic() - started, 1),
        "train_seconds": round(float(result.metrics.get("train_runtime", 0.0)), 2),
        "train_records": len(train),
        "tokens_seen": int(getattr(trainer.state, "num_input_tokens_seen", 0) or 0),
        "size_bytes": sum(p.stat().st_size for p in final_dir.rglob("*") if p.is_file()),
        # wall-clock times of the start-up phases (the first step's end included), for time-to-first-step
        "timeline": timeline | callback.timeline,
        "mlflow": trackers.run.as_dict() if trackers and trackers.run and trackers.mlflow else None,
    }


def _planned_steps(spec: TrainingSpec, records: int) -> int:
    if spec.max_steps:
        return spec.max_steps
    per_epoch = max(1, -(-records // (spec.batch_size * spec.gradient_accumulation_steps * world_size())))
    return max(1, int(per_epoch * spec.num_epochs + 0.999))


def _start_from_checkpoint(source: dict[str, str], output_dir: Path, metrics_path: Path) -> None:
    """A job resumed from another job's checkpoint: copy it (under a temporary name, renamed when whole) and
    the curve up to it, then training resumes from it like from its own."""
    checkpoint = Path(source["checkpoint_dir"])
    if not checkpoint.is_dir():
        raise DataError("resume_checkpoint_missing", checkpoint=checkpoint.name)
    partial = output_dir / f".copy-{checkpoint.name}"
    shutil.rmtree(partial, ignore_errors=True)
    shutil.copytree(checkpoint, partial)
    partial.rename(output_dir / checkpoint.name)
    step = int(checkpoint.name.split("-", 1)[1])
    old_metrics = Path(source["metrics_path"])
    if old_metrics.is_file() and not metrics_path.exists():
        with old_metrics.open() as reader, metrics_path.open("w") as writer:
            for line in reader:
                try:
                    if json.loads(line).get("step", 0) <= step:
                        writer.write(line)
                except ValueError:
                    continue


PROBE_TEXT = "Refinery probe: the quick brown fox"


def probe_logits(model: Any, tokenizer: Any) -> list[float]:
    """A fingerprint of the trained weights: logits of a fixed text. A reloaded adapter must reproduce it."""
    import torch

    model.eval()
    ids = tokenizer(PROBE_TEXT, return_tensors="pt").to(next(model.parameters()).device)
    with torch.no_grad():
        logits = model(**ids).logits[0]
    last = logits[-1] if logits.dim() > 1 else logits  # a language model's next token, or a reward score
    return [round(float(x), 5) for x in last[:8]]


class ModelLoadError(RuntimeError):
    pass


def main(job: dict[str, Any]) -> int:
    import torch

    exit_with_parent()
    try:
        result = run(job)
    except DataError as exc:
        fail("data", exc.code, **exc.params)
        return 1
    except ModelLoadError as exc:
        fail("model_load", "model_load", detail=str(exc))
        return 1
    except torch.OutOfMemoryError:
        fail("oom", "oom")
        return 1
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            raise
        fail("disk_full", "disk_full", path=Path(exc.filename).name if exc.filename else "")
        return 1
    except (RuntimeError, ValueError) as exc:
        if "out of memory" in str(exc).lower():
            fail("oom", "oom")
        else:
            fail("training", "training_error", detail=str(exc))
        return 1
    if result is not None:
        emit(result=result)
    return 0


if __name__ == "__main__":
    sys.exit(main(json.loads(sys.argv[1])))
