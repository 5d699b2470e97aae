"""Several dataset versions in one job, each with a ratio, for any method (TrainingSpec.mix): the worker draws
the mixed-in records, the events say how many, the form and clones carry the rows, wrong mixes are refused
with the field named, and a mixed-in version cannot be deleted from under its job."""

from __future__ import annotations

import json
import re
import uuid
from pathlib import Path
from typing import Any

from tests.conftest import csrf_of
from worker import lifecycle


def _upload(client: Any, tmp_path: Path, name: str, rows: list[dict[str, Any]]) -> dict[str, Any]:
    path = tmp_path / name
    path.write_text("\n".join(json.dumps(r) for r in rows))
    with path.open("rb") as handle:
        dataset = client.post("/api/v1/datasets", files={"file": (name, handle)}).json()
    lifecycle.execute(dataset["validation_run"]["id"])
    return dict(client.get(f"/api/v1/datasets/{dataset['id']}").json())


def test_mixing_versions_into_a_job(client: Any, setup: dict[str, Any], tmp_path: Path) -> None:
    greetings = _upload(
        client,
        tmp_path,
        "greet.jsonl",
        [
            {"messages": [{"role": "user", "content": f"Greet {i}."}, {"role": "assistant", "content": f"Hi {i}"}]}
            for i in range(8)
        ],
    )
    pairs = _upload(
        client,
        tmp_path,
        "pairs.jsonl",
        [
            {
                "prompt": [{"role": "user", "content": f"Q{i}"}],
                "chosen": [{"role": "assistant", "content": "good"}],
                "rejected": [{"role": "assistant", "content": "bad"}],
            }
            for i in range(6)
        ],
    )
    greet_version = greetings["versions"][0]["id"]
    spec = {"max_steps": 2, "batch_size": 4, "eval_steps": 0, "save_steps": 100, "max_seq_length": 64}

    def launch(mix: list[dict[str, Any]]) -> Any:
        body = {"model_id": setup["model"], "dataset_version_id": setup["version"], "spec": {**spec, "mix": mix}}
        return client.post("/api/v1/jobs", json=body)

    # refused, each with the field named: records the method cannot read, the job's own version, twice, not yours
    wrong_kind = launch([{"version_id": pairs["versions"][0]["id"], "ratio": 1}])
    assert wrong_kind.status_code == 422 and wrong_kind.json()["error"]["field"] == "mix"
    assert "SFT" in wrong_kind.json()["error"]["message"] and "pairs" in wrong_kind.json()["error"]["message"]
    own = launch([{"version_id": setup["version"], "ratio": 1}])
    assert own.status_code == 422 and own.json()["error"]["field"] == "mix"
    twice = launch([{"version_id": greet_version, "ratio": 1}, {"version_id": greet_version, "ratio": 2}])
    assert twice.status_code == 422 and "twice" in twice.json()["error"]["message"]
    assert launch([{"version_id": str(uuid.uuid4()), "ratio": 1}]).status_code == 404
    assert launch([{"version_id": greet_version, "ratio": 0}]).status_code == 422  # the ratio's range

    # mixed: twice as many greetings as the job's own train records (8 of them, so repeated), then trained
    job = launch([{"version_id": greet_version, "ratio": 2}])
    assert job.status_code == 201, job.text
    job = job.json()
    assert job["spec"]["mix"] == [{"version_id": greet_version, "ratio": 2.0}]
    lifecycle.execute(job["run"]["id"])
    done = client.get(f"/api/v1/jobs/{job['id']}").json()
    assert done["status"] == "succeeded", done["run"]
    events = client.get(f"/api/v1/runs/{job['run']['id']}/events").json()
    mixed = next(e for e in events if e["code"] == "dataset_mixed")
    own_rows = int(mixed["params"]["own"])
    assert own_rows > 0 and mixed["params"]["mixed"] == str(2 * own_rows)
    assert int(mixed["params"]["total"]) == 3 * own_rows == done["run"]["result"]["train_records"]
    assert f"{own_rows} records of the job's dataset and {2 * own_rows}" in mixed["message"]

    # the lineage names it; a mixed-in version cannot be deleted from under the job
    lineage = client.get(f"/adapters/{job['id']}")
    assert lineage.status_code == 200 and "greet" in lineage.text and "Mixed in, 2 per record" in lineage.text
    from app.datasets import service as datasets
    from app.db.models import Dataset
    from app.db.session import session_scope

    with session_scope() as session:
        dataset = session.get(Dataset, uuid.UUID(greetings["id"]))
        assert dataset is not None and not datasets.deletable(session, dataset)
        other = session.get(Dataset, uuid.UUID(pairs["id"]))
        assert other is not None and datasets.deletable(session, other)

    # the form: a clone shows the mix row; the rows the form sends make the same mix
    clone = client.get(f"/jobs/new?from={job['id']}")
    assert re.search(rf'<option value="{greet_version}" selected>greet', clone.text)
    assert 'name="mix_ratio_1"' in clone.text and 'value="2"' in clone.text
    token = csrf_of(client, "/jobs/new")
    form = {
        "csrf_token": token,
        "model_id": setup["model"],
        "dataset_version_id": setup["version"],
        "method": "sft",
        "adapter": "lora",
        "max_steps": "2",
        "mix_version_1": greet_version,
        "mix_ratio_1": "0.5",
    }
    made = client.post("/jobs", data=form, follow_redirects=False)
    assert made.status_code == 303, made.text[:2000]
    made_id = made.headers["location"].rsplit("/", 1)[-1]
    assert client.get(f"/api/v1/jobs/{made_id}").json()["spec"]["mix"] == [{"version_id": greet_version, "ratio": 0.5}]
    # a wrong mix in the form comes back with the rows kept and the error shown
    again = client.post("/jobs", data={**form, "mix_version_1": pairs["versions"][0]["id"]}, follow_redirects=False)
    assert again.status_code == 422 and 'id="mix" open' in again.text and "pairs" in again.text
