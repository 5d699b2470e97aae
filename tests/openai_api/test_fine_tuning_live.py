"""A script written for OpenAI's fine-tuning API, unchanged but for ``base_url`` and ``api_key``, against a
live Refinery (``refinery up`` on loopback, embedded default) and the tiny model: upload, create, poll to
success, events, checkpoints, cancel another job, chat with the result whole and streamed; OpenAI-shaped
errors for bad requests."""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import free_port, refinery_command, service_process, wait_for

ADMIN = "ops@example.com"


def refinery(env: dict[str, str], *args: str, stdin: str = "") -> str:
    done = subprocess.run(
        [refinery_command(), *args], env=env, input=stdin, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Iterator[dict[str, Any]]:
    data = tmp_path_factory.mktemp("refinery-openai")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("REFINERY_")}
    env.update(
        {
            "REFINERY_DATA_DIR": str(data),
            "REFINERY_PORT": str(port),
            "REFINERY_INFERENCE_PORT": str(free_port()),
            "REFINERY_IMPORT_BUNDLED_MODEL": "false",
            "REFINERY_HUB_ENDPOINT": "",
        }
    )
    base = f"http://127.0.0.1:{port}"
    up = [refinery_command(), "up"]
    with service_process(up, env=env, log=data / "up.log", health_url=f"{base}/healthz", what="refinery up"):
        refinery(env, "users", "create", ADMIN, "--admin", "--password-stdin", stdin="ops-password-123\n")
        key = refinery(env, "keys", "create", ADMIN, "--name", "openai script")
        headers = {"Authorization": f"Bearer {key}"}
        model = httpx.post(
            f"{base}/api/v1/models/local", json={"name": "tiny", "path": str(tiny_model_dir)}, headers=headers
        ).json()
        wait_for(
            lambda: httpx.get(f"{base}/api/v1/models/{model['id']}", headers=headers).json()["status"] == "ready",
            timeout=120,
            what="the tiny model's import",
        )
        yield {"base": base, "key": key, "model": model, "data": data}


def records(n: int) -> bytes:
    rows = [
        {"messages": [{"role": "user", "content": f"Add {i} and {i}."}, {"role": "assistant", "content": f"{2 * i}"}]}
        for i in range(n)
    ]
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


def test_an_openai_fine_tuning_script_runs_unchanged(live: dict[str, Any]) -> None:
    client = openai.OpenAI(base_url=f"{live['base']}/v1", api_key=live["key"], max_retries=0)

    # --- the script, as written for OpenAI ---
    weighted = {  # OpenAI's weighted-turn shape: the first answer is context only
        "messages": [
            {"role": "user", "content": "Add 1 and 1."},
            {"role": "assistant", "content": "11", "weight": 0},
            {"role": "user", "content": "No, as a sum."},
            {"role": "assistant", "content": "2", "weight": 1},
        ]
    }
    train_file = records(23) + json.dumps(weighted).encode() + b"\n"
    training = client.files.create(file=("train.jsonl", train_file), purpose="fine-tune")
    validation = client.files.create(file=("valid.jsonl", records(8)), purpose="fine-tune")
    for uploaded in (training, validation):  # as OpenAI's own guide does: both files processed first
        client.files.wait_for_processing(uploaded.id, poll_interval=0.5, max_wait_seconds=120)
    job = client.fine_tuning.jobs.create(
        model="tiny",
        training_file=training.id,
        validation_file=validation.id,
        hyperparameters={"n_epochs": 1, "batch_size": 4, "learning_rate_multiplier": 10},
        suffix="sums",
        seed=7,
        metadata={"team": "search", "ticket": "T-1"},
    )
    assert job.status in ("validating_files", "queued", "running") and job.fine_tuned_model is None
    assert job.metadata == {"team": "search", "ticket": "T-1"} and job.model == "tiny"
    deadline = time.monotonic() + 300
    while job.status not in ("succeeded", "failed", "cancelled") and time.monotonic() < deadline:
        time.sleep(1)
        job = client.fine_tuning.jobs.retrieve(job.id)
    assert job.status == "succeeded", job.error
    # OpenAI's ft: style, with the base, the suffix and the job
    assert job.fine_tuned_model == f"ft:tiny:refinery:sums:{job.id.removeprefix('ftjob-')[:8]}"
    assert job.user_provided_suffix == "sums"
    assert job.trained_tokens and job.trained_tokens > 0 and job.finished_at
    assert job.training_file == training.id and job.validation_file == validation.id and job.seed == 7
    assert job.hyperparameters.n_epochs == 1 and job.hyperparameters.batch_size == 4
    assert job.hyperparameters.learning_rate_multiplier == pytest.approx(10)

    events = client.fine_tuning.jobs.list_events(job.id, limit=50).data
    messages = [e.message for e in events]
    assert any(m.startswith("Training started") for m in messages) and "Succeeded." in messages
    assert any(e.type == "metrics" and e.data["train_loss"] > 0 for e in events)
    assert events[0].created_at >= events[-1].created_at  # newest first
    first_two = client.fine_tuning.jobs.list_events(job.id, limit=2)
    assert len(first_two.data) == 2 and first_two.has_more
    after = client.fine_tuning.jobs.list_events(job.id, limit=2, after=first_two.data[-1].id).data
    assert after and after[0].id not in {e.id for e in first_two.data}

    checkpoints = client.fine_tuning.jobs.checkpoints.list(job.id).data
    assert checkpoints and checkpoints[0].step_number == max(c.step_number for c in checkpoints)
    assert checkpoints[0].metrics.train_loss is not None
    assert (
        checkpoints[0].fine_tuned_model_checkpoint == f"{job.fine_tuned_model}:ckpt-step-{checkpoints[0].step_number}"
    )

    # the result file: per-step metrics as CSV, read with files.content
    assert len(job.result_files) == 1
    result = client.files.retrieve(job.result_files[0])
    assert result.purpose == "fine-tune-results" and result.filename == "step_metrics.csv"
    table = client.files.content(job.result_files[0]).text.splitlines()
    assert table[0] == "step,train_loss,train_accuracy,valid_loss,valid_mean_token_accuracy"
    first = next(row.split(",") for row in table[1:] if row.split(",")[1])  # step 0 holds the validation before
    assert int(first[0]) >= 1 and float(first[1]) > 0 and 0 <= float(first[2]) <= 1, table[:3]
    assert any(row.split(",")[3] for row in table[1:])  # validation loss where it was measured

    listed = client.fine_tuning.jobs.list(limit=10)
    assert job.id in [j.id for j in listed.data]
    assert [j.id for j in client.fine_tuning.jobs.list(metadata={"team": "search"})] == [job.id]
    assert client.fine_tuning.jobs.list(metadata={"team": "ads"}).data == []

    # the same seed, data and settings: the same loss curve; another seed, another curve
    def seeded(seed: int) -> Any:
        made = client.fine_tuning.jobs.create(
            model="tiny",
            training_file=training.id,
            validation_file=validation.id,
            hyperparameters={"n_epochs": 1, "batch_size": 4, "learning_rate_multiplier": 10},
            seed=seed,
        )
        wait_for(
            lambda: client.fine_tuning.jobs.retrieve(made.id).status in ("succeeded", "failed"),
            timeout=300,
            what=f"the job with seed {seed}",
        )
        return client.fine_tuning.jobs.retrieve(made.id)

    again, other_seed = seeded(7), seeded(8)
    assert again.status == "succeeded" and again.fine_tuned_model != job.fine_tuned_model

    def losses(ident: str) -> list[float]:
        rows = client.files.content(client.fine_tuning.jobs.retrieve(ident).result_files[0]).text.splitlines()[1:]
        return [float(r.split(",")[1]) for r in rows if r.split(",")[1]][:3]

    assert losses(other_seed.id) != pytest.approx(losses(job.id), rel=1e-4)
    assert losses(again.id) == pytest.approx(losses(job.id), rel=1e-4)

    # another job, cancelled while it waits or runs
    other = client.fine_tuning.jobs.create(model="tiny", training_file=training.id, hyperparameters={"n_epochs": 50})
    client.fine_tuning.jobs.cancel(other.id)
    wait_for(lambda: client.fine_tuning.jobs.retrieve(other.id).status == "cancelled", timeout=120, what="the cancel")

    # chat with the result, whole and streamed
    question = [{"role": "user", "content": "Add 3 and 3."}]
    whole = client.chat.completions.create(model=job.fine_tuned_model, messages=question, max_tokens=8, temperature=0)
    streamed = client.chat.completions.create(
        model=job.fine_tuned_model, messages=question, max_tokens=8, temperature=0, stream=True
    )
    assert "".join(c.choices[0].delta.content or "" for c in streamed) == whole.choices[0].message.content
    assert job.fine_tuned_model in [m.id for m in client.models.list().data]
    older = f"job-{job.id.removeprefix('ftjob-')}"  # the id before readable ones keeps working
    assert client.models.retrieve(older).id == job.fine_tuned_model
    checkpoint = checkpoints[0].fine_tuned_model_checkpoint
    answer = client.chat.completions.create(model=checkpoint, messages=question, max_tokens=4, temperature=0)
    assert answer.choices[0].message.content is not None

    # deleting a fine-tuned model deletes the adapter, as on OpenAI; a base model cannot be deleted this way
    deleted = client.models.delete(again.fine_tuned_model)
    assert deleted.deleted and deleted.id == again.fine_tuned_model
    assert again.fine_tuned_model not in [m.id for m in client.models.list().data]
    with pytest.raises(openai.BadRequestError) as base_delete:
        client.models.delete("tiny")
    assert base_delete.value.code == "model_not_deletable"

    # the job is a training job in the UI and API too
    headers = {"Authorization": f"Bearer {live['key']}"}
    ui_jobs = httpx.get(f"{live['base']}/api/v1/jobs", headers=headers).json()
    assert any(j["name"] == "ft-sums" and j["status"] == "succeeded" for j in ui_jobs)


def test_bad_requests_get_openai_errors(live: dict[str, Any]) -> None:
    client = openai.OpenAI(base_url=f"{live['base']}/v1", api_key=live["key"], max_retries=0)
    with pytest.raises(openai.NotFoundError) as missing_file:
        client.fine_tuning.jobs.create(model="tiny", training_file="file-0000")
    assert missing_file.value.code == "file_not_found" and missing_file.value.param == "file_id"
    good = client.files.create(file=("ok.jsonl", records(4)), purpose="fine-tune")
    with pytest.raises(openai.NotFoundError) as unknown_model:
        client.fine_tuning.jobs.create(model="gpt-4o-mini", training_file=good.id)
    assert unknown_model.value.code == "model_not_found" and unknown_model.value.param == "model"

    bad = client.files.create(file=("bad.jsonl", records(3) + b"not json\n"), purpose="fine-tune")
    client.files.wait_for_processing(bad.id, poll_interval=0.5, max_wait_seconds=120)
    with pytest.raises(openai.BadRequestError) as bad_file:
        client.fine_tuning.jobs.create(model="tiny", training_file=bad.id)
    assert bad_file.value.param == "training_file" and "line 4" in bad_file.value.message

    with pytest.raises(openai.BadRequestError) as integration:
        client.fine_tuning.jobs.create(
            model="tiny", training_file=good.id, integrations=[{"type": "wandb", "wandb": {"project": "p"}}]
        )
    assert integration.value.param == "integrations[0].type" and "wandb" in integration.value.message

    with pytest.raises(openai.BadRequestError) as bad_hyper:
        client.fine_tuning.jobs.create(model="tiny", training_file=good.id, hyperparameters={"n_epochs": -1})
    assert bad_hyper.value.status_code == 400
    with pytest.raises(openai.NotFoundError):
        client.fine_tuning.jobs.retrieve("ftjob-nothing")
    raw = httpx.post(
        f"{live['base']}/v1/fine_tuning/jobs", content=b"{", headers={"Authorization": f"Bearer {live['key']}"}
    )
    assert raw.status_code == 400 and raw.json()["error"]["type"] == "invalid_request_error"


def test_openai_dpo_lines_train_with_method_dpo(live: dict[str, Any]) -> None:
    client = openai.OpenAI(base_url=f"{live['base']}/v1", api_key=live["key"], max_retries=0)
    lines = [
        {
            "input": {"messages": [{"role": "user", "content": f"Add {i} and {i}."}]},
            "preferred_output": [{"role": "assistant", "content": str(2 * i)}],
            "non_preferred_output": [{"role": "assistant", "content": f"{i}{i}"}],
        }
        for i in range(8)
    ]
    pairs = client.files.create(
        file=("pairs.jsonl", "".join(json.dumps(line) + "\n" for line in lines).encode()), purpose="fine-tune"
    )
    client.files.wait_for_processing(pairs.id, poll_interval=0.5, max_wait_seconds=120)
    job = client.fine_tuning.jobs.create(
        model="tiny",
        training_file=pairs.id,
        method={"type": "dpo", "dpo": {"hyperparameters": {"beta": 0.2, "n_epochs": 1, "batch_size": 4}}},
        suffix="pairs",
    )
    wait_for(
        lambda: client.fine_tuning.jobs.retrieve(job.id).status in ("succeeded", "failed", "cancelled"),
        timeout=300,
        what="the DPO job",
    )
    job = client.fine_tuning.jobs.retrieve(job.id)
    assert job.status == "succeeded", job.error
    assert job.method is not None and job.method.type == "dpo"
    assert job.method.dpo is not None and job.method.dpo.hyperparameters is not None
    assert job.method.dpo.hyperparameters.beta == pytest.approx(0.2)
    assert job.fine_tuned_model is not None and job.fine_tuned_model.startswith("ft:tiny:refinery:pairs:")


def test_openai_reinforcement_lines_train_with_a_grader_as_reward(live: dict[str, Any]) -> None:
    """OpenAI's reinforcement fine-tuning: lines end with the user's turn and carry the fields the grader reads;
    the job is GRPO rewarded by the grader, its reward is in the metrics file, and the job reads back as
    method reinforcement with its grader through the client's typed objects."""
    client = openai.OpenAI(base_url=f"{live['base']}/v1", api_key=live["key"], max_retries=0)
    lines = [
        {"messages": [{"role": "user", "content": f"Add {i} and {i}."}], "reference_answer": str(2 * i)}
        for i in range(8)
    ]
    prompts = client.files.create(
        file=("rft.jsonl", "".join(json.dumps(line) + "\n" for line in lines).encode()), purpose="fine-tune"
    )
    client.files.wait_for_processing(prompts.id, poll_interval=0.5, max_wait_seconds=120)
    grader = {
        "type": "python",
        "name": "has answer",
        "source": "def grade(sample, item):\n"
        "    return 1.0 if item['reference_answer'] in sample['output_text'] else 0.1\n",
    }
    judge = {"type": "score_model", "name": "j", "model": "m", "input": [{"role": "user", "content": "x"}]}
    with pytest.raises(openai.BadRequestError, match="reaches no judge"):
        client.fine_tuning.jobs.create(
            model="tiny", training_file=prompts.id, method={"type": "reinforcement", "reinforcement": {"grader": judge}}
        )
    # supervised first, then reinforcement from that fine-tuned model (its adapter trained further)
    answers = client.files.create(file=("sums.jsonl", records(8)), purpose="fine-tune")
    client.files.wait_for_processing(answers.id, poll_interval=0.5, max_wait_seconds=120)
    sft = client.fine_tuning.jobs.create(
        model="tiny", training_file=answers.id, hyperparameters={"n_epochs": 1, "batch_size": 4}, suffix="sums"
    )
    wait_for(
        lambda: client.fine_tuning.jobs.retrieve(sft.id).status in ("succeeded", "failed", "cancelled"),
        timeout=300,
        what="the supervised job",
    )
    sft = client.fine_tuning.jobs.retrieve(sft.id)
    assert sft.status == "succeeded" and sft.fine_tuned_model, sft.error
    hyper = {"n_epochs": 1, "batch_size": 4, "compute_multiplier": 0.5}
    job = client.fine_tuning.jobs.create(
        model=sft.fine_tuned_model,
        training_file=prompts.id,
        method={"type": "reinforcement", "reinforcement": {"grader": grader, "hyperparameters": hyper}},
        suffix="rft",
    )
    wait_for(
        lambda: client.fine_tuning.jobs.retrieve(job.id).status in ("succeeded", "failed", "cancelled"),
        timeout=300,
        what="the reinforcement job",
    )
    job = client.fine_tuning.jobs.retrieve(job.id)
    assert job.status == "succeeded", job.error
    assert job.model == sft.fine_tuned_model  # trained further from it
    spec = httpx.get(
        f"{live['base']}/api/v1/jobs/{job.id.removeprefix('ftjob-')}",
        headers={"Authorization": f"Bearer {live['key']}"},
    ).json()["spec"]
    assert uuid.UUID(spec["start_from_job_id"]).hex == sft.id.removeprefix("ftjob-")
    assert job.method is not None and job.method.type == "reinforcement" and job.method.reinforcement is not None
    assert job.method.reinforcement.grader.type == "python" and job.method.reinforcement.grader.name == "has answer"
    assert job.method.reinforcement.hyperparameters is not None
    assert job.method.reinforcement.hyperparameters.compute_multiplier == pytest.approx(0.5)  # two answers each
    metrics = client.files.content(job.result_files[0]).text.splitlines()
    header = metrics[0].split(",")
    assert "reward" in header and "reward_std" in header
    rewards = [
        float(row.split(",")[header.index("reward")]) for row in metrics[1:] if row.split(",")[header.index("reward")]
    ]
    assert rewards and all(0.1 <= r <= 1.0 for r in rewards)  # the grader's scores, never a failed grade's 0


def test_pause_and_resume_through_the_openai_client(live: dict[str, Any]) -> None:
    client = openai.OpenAI(base_url=f"{live['base']}/v1", api_key=live["key"], max_retries=0)
    training = client.files.create(file=("long.jsonl", records(24)), purpose="fine-tune")
    client.files.wait_for_processing(training.id, poll_interval=0.5, max_wait_seconds=120)
    job = client.fine_tuning.jobs.create(model="tiny", training_file=training.id, hyperparameters={"n_epochs": 100})

    def trained() -> int:
        events = client.fine_tuning.jobs.list_events(job.id, limit=100).data
        return max((int(e.data["step"]) for e in events if e.type == "metrics"), default=0)

    wait_for(lambda: trained() >= 2, timeout=120, what="the job's first steps")
    # once the rate is measured a running job says when it should finish
    finish = wait_for(
        lambda: client.fine_tuning.jobs.retrieve(job.id).estimated_finish, timeout=120, what="estimated_finish"
    )
    assert finish > time.time() - 5
    paused = client.fine_tuning.jobs.pause(job.id)
    assert paused.status in ("running", "paused")
    wait_for(lambda: client.fine_tuning.jobs.retrieve(job.id).status == "paused", timeout=120, what="the pause")
    saved = client.fine_tuning.jobs.checkpoints.list(job.id).data
    assert saved, "a paused job keeps the checkpoint it stopped at"
    step = saved[0].step_number
    resumed = client.fine_tuning.jobs.resume(job.id)
    assert resumed.status in ("queued", "running")
    wait_for(lambda: trained() > step, timeout=120, what="steps after the resume")
    client.fine_tuning.jobs.cancel(job.id)
    wait_for(lambda: client.fine_tuning.jobs.retrieve(job.id).status == "cancelled", timeout=120, what="the cancel")
    messages = [e.message for e in client.fine_tuning.jobs.list_events(job.id, limit=100).data]
    assert any(m.startswith("Paused.") for m in messages) and "Resumed: queued again." in messages
