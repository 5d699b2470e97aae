"""Texts that background runs produce (events, progress, failures), as codes with parameters.

They are stored as code + params and rendered in the reader's language when shown; the English rendering
is also stored for logs and API clients. A parameter that is itself ``{"code", "params"}`` is rendered too.
"""

from __future__ import annotations

from typing import Any

from app.core.i18n import N_, gettext, translations

TEXTS: dict[str, str] = {
    # events
    "queued": N_("Queued."),
    "started": N_("Started attempt %(attempt)s on %(worker)s."),
    "succeeded": N_("Succeeded."),
    "cancelled": N_("Cancelled."),
    "cancelled_before_start": N_("Cancelled before it started."),
    "cancel_requested": N_("Cancellation requested."),
    "pause_requested": N_("Pause requested: the run stops at its next checkpoint."),
    "paused": N_("Paused. Resume it to continue from its latest checkpoint."),
    "resumed": N_("Resumed: queued again."),
    "failed": N_("Failed (%(kind)s): %(reason)s"),
    "requeued": N_("%(reason)s Re-queued for attempt %(attempt)s."),
    "gave_up": N_("%(reason)s It failed %(attempts)s times; see the event log."),
    "lost_heartbeat": N_("The worker stopped sending heartbeats."),
    "worker_stopped": N_("The worker was stopped."),
    "killed": N_("The job process was killed by signal %(signal)s."),
    "exited": N_("The job process exited with code %(code)s."),
    "unknown_kind": N_("This worker does not know how to run '%(kind)s' jobs; upgrade it."),
    "not_prepared": N_("The job could not be prepared: %(detail)s"),
    # progress
    "gguf_tokenizer": N_("Reading the GGUF tokenizer"),
    "gguf_weights": N_("De-quantising GGUF weights"),
    "writing_safetensors": N_("Writing safetensors"),
    "copying": N_("Copying %(file)s"),
    "downloading": N_("Downloading %(repo)s@%(revision)s"),
    "model_metadata": N_("Reading model metadata"),
    "validated_lines": N_("Validated %(done)s of about %(total)s lines"),
    "tokenising": N_("Tokenising the dataset"),
    "loading_model": N_("Loading the base model"),
    "resuming": N_("Resuming from %(checkpoint)s"),
    "training_started": N_(
        "Training started: %(records)s training records, %(steps)s steps, %(trainable)s of %(total)s parameters "
        "trained."
    ),
    "dataset_mixed": N_(
        "Mixed datasets: %(own)s records of the job's dataset and %(mixed)s from the mixed-in versions, "
        "%(total)s in all."
    ),
    "checkpoint_saved": N_("Checkpoint saved at step %(step)s."),
    "tracker_logging": N_("Logging to %(tracker)s: %(url)s"),
    "tracker_down": N_("%(tracker)s stopped answering (%(detail)s); the job goes on without it."),
    "eval_loss": N_("Scoring the test answers: %(done)s/%(total)s"),
    "generating": N_("Generating answers: batch %(done)s/%(total)s"),
    "probing": N_("Checking general tasks for forgetting"),
    "judging": N_("Judging answers: sample %(done)s/%(total)s"),
    "grading_items": N_("Grading items: %(done)s/%(total)s"),
    "grading_answers": N_("Grading the answers: %(done)s/%(total)s"),
    "merge_loading": N_("Loading the base model and the adapter"),
    "merge_merging": N_("Merging the adapter into the base weights"),
    "merge_saving": N_("Saving the merged weights as safetensors"),
    "gguf_writing": N_("Writing the %(format)s GGUF file"),
    "distilling": N_("The teacher answered %(done)s of %(total)s prompts"),
    "adapter_check_forward": N_("Running the base model with the adapter once"),
    "cleaning_records": N_("Cleaned %(done)s of %(total)s records"),
    "committing_records": N_("Wrote %(done)s of %(total)s records into the new version"),
    "step": N_("step %(step)s/%(total)s"),
    "step_loss": N_("step %(step)s/%(total)s, loss %(loss)s"),
    # failures (each says what to change)
    "unknown_source": N_("Unknown model source %(source)s."),
    "pickle_weights": N_("The model ships pickle weights; only safetensors are loaded. Convert it first."),
    "missing_file": N_("A file of the model is missing: %(file)s. Check the directory and retry."),
    "unreadable_model": N_(
        "The model could not be read (%(detail)s). Check that it is a Hugging Face model "
        "directory with valid safetensors weights."
    ),
    "no_train_records": N_(
        "The train split has no usable records for this method; check the dataset version "
        "(kinds and splits) and max sequence length."
    ),
    "qlora_no_cuda": N_("QLoRA needs a CUDA GPU and this worker has none; choose LoRA."),
    "resume_checkpoint_missing": N_(
        "The checkpoint %(checkpoint)s to resume from has been deleted; pick another checkpoint or start anew."
    ),
    "no_test_records": N_(
        "The %(split)s split has no chat or preference records to evaluate on; choose another dataset version."
    ),
    "evaluation_error": N_("The evaluation stopped with an error: %(detail)s."),
    "eval_run_error": N_("The eval run stopped with an error: %(detail)s."),
    "judge_unreachable": N_(
        "The judge failed %(count)s times in a row (last: %(detail)s); check its URL, model and key, or raise "
        "its timeout, then judge again."
    ),
    "merge_error": N_("The merge stopped with an error: %(detail)s."),
    "gguf_error": N_("The GGUF export stopped with an error: %(detail)s."),
    "distill_error": N_("The distillation stopped with an error: %(detail)s."),
    "no_prompts": N_("The dataset version's train split has no prompts (conversations ending with a user turn)."),
    "teacher_unreachable": N_(
        "The teacher failed %(count)s times in a row (last: %(detail)s); check its URL, model and key under "
        "Judges, then distil again: the answers so far are kept."
    ),
    "adapter_check_error": N_("The adapter does not load onto this base model: %(detail)s."),
    "cleaning_error": N_("The cleaning stopped with an error: %(detail)s."),
    "regex_timeout": N_(
        "Step %(step)s: the regular expression %(pattern)s took longer than %(seconds)s s on record %(record)s, "
        "so the cleaning stopped. Nested repeats such as (a+)+ can take forever; simplify the expression and "
        "run the cleaning again."
    ),
    "commit_error": N_("The commit stopped with an error: %(detail)s; commit again, or run the cleaning again."),
    "no_samples": N_("This evaluation has no answers to judge; run the evaluation again first."),
    "no_reward_model": N_(
        "The reward model of this RLHF job is gone or has not succeeded; train a reward model and pick it."
    ),
    "start_adapter_missing": N_(
        "The adapter this job starts from is gone (its job was deleted); pick another job to start from, or none."
    ),
    "deepspeed_missing": N_(
        "DeepSpeed is not installed on this worker; install it in the GPU worker image, or choose DDP or FSDP."
    ),
    "no_template": N_("The base model has no tokenizer.json or chat template; it cannot be trained here."),
    "model_load": N_("The base model could not be loaded (%(detail)s); re-import it and try again."),
    "oom": N_(
        "Out of memory. Lower the batch size (raise gradient accumulation to keep the effective batch), "
        "shorten max sequence length, or use LoRA/QLoRA instead of full fine-tuning."
    ),
    "disk_full": N_(
        "The disk is full (writing %(path)s). Free space on the data disk, or keep fewer checkpoints "
        "(save_total_limit); the last complete checkpoint is kept and a new job can resume from it."
    ),
    "training_error": N_("Training stopped with an error: %(detail)s. Lower the learning rate or check the data."),
    "upload_unreadable": N_("The upload could not be read (%(detail)s); upload the file again."),
    "decompression_ratio": N_(
        "The file expands to more than %(ratio)s times its %(size)s bytes when decompressed, which is how "
        "decompression bombs look; upload it uncompressed, or an administrator can raise %(setting)s."
    ),
    "decompressed_too_large": N_(
        "The file is larger than %(limit)s bytes when decompressed; split it, or an administrator can raise "
        "%(setting)s."
    ),
    "too_many_columns": N_(
        "The file has %(columns)s columns, more than the limit of %(limit)s; keep the columns the records need, "
        "or an administrator can raise %(setting)s."
    ),
    "parquet_too_deep": N_(
        "The Parquet schema nests %(depth)s levels deep, more than %(limit)s; flatten the columns the records use."
    ),
    "validation_memory": N_(
        "Reading the file needed more than %(limit)s MB of memory, so it was stopped; split the file, or an "
        "administrator can raise %(setting)s."
    ),
    "validation_cpu": N_(
        "Reading the file used more than %(limit)s s of processor time, so it was stopped; split the file, or an "
        "administrator can raise %(setting)s."
    ),
    # a child that sends a plain sentence instead of a code (shown as it is)
    "plain": "%(detail)s",
}


def text(code: str, **params: Any) -> dict[str, Any]:
    return {"code": code, "params": params}


def _render(code: str, params: dict[str, Any], translate: Any) -> str:
    template = TEXTS.get(code)
    if template is None:
        return code
    values = {
        k: _render(v["code"], v.get("params") or {}, translate) if isinstance(v, dict) and "code" in v else v
        for k, v in params.items()
    }
    rendered = translate(template)
    try:
        return str(rendered % values) if values else str(rendered)
    except (KeyError, TypeError, ValueError):
        return str(template % values) if values else template


def describe(code: str | None, params: dict[str, Any] | None, fallback: str | None = None) -> str:
    """In the current request's language."""
    if not code:
        return fallback or ""
    return _render(code, params or {}, gettext)


def english(code: str, params: dict[str, Any] | None = None) -> str:
    return _render(code, params or {}, translations("en").gettext)
