"""The judge child against a fake OpenAI-compatible server with known verdicts: position swapping, the
rubric, malformed answers and timeouts (reported, never wins), and giving up on a judge that keeps failing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.evaluation.fake_judge import FakeJudge
from worker.evaluation import judge


def sample(sample_id: str, prompt: str, base: str, tuned: str) -> dict[str, Any]:
    return {
        "id": sample_id,
        "prompt": [{"role": "user", "content": prompt}],
        "reference": "the reference",
        "base": {"output": base},
        "few_shot": {"output": "not judged"},
        "tuned": {"output": tuned},
    }


def judge_job(tmp_path: Path, samples: list[dict[str, Any]], url: str, timeout_s: float) -> dict[str, Any]:
    tmp_path.mkdir(exist_ok=True)
    path = tmp_path / "samples.jsonl"
    path.write_text("".join(json.dumps(s) + "\n" for s in samples))
    return {
        "judge_id": "unused",
        "judge_name": "fake",
        "url": url,
        "model": "judge-model",
        "timeout_s": timeout_s,
        "samples_path": str(path),
        "output_dir": str(tmp_path / "out"),
    }


@pytest.fixture
def key(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setattr(judge, "api_key", lambda job: "sk-test")  # the key lookup reads the database
    return "sk-test"


def test_known_verdicts_malformed_and_timeout(tmp_path: Path, key: str, loopback_judges: None) -> None:
    samples = [
        sample("tuned-wins", "q1", "meh", "GOOD answer"),
        sample("base-wins", "q2", "GOOD answer", "meh"),
        sample("biased", "q3", "one", "two"),
        sample("malformed", "q4 MALFORMED", "x", "y"),
        sample("slow", "q5 SLOW", "x", "y"),
        sample("bad-score", "q6 BADSCORE", "GOOD", "meh"),
    ]
    with FakeJudge(prefer="first", slow_s=1.5) as fake:
        result = judge.run(judge_job(tmp_path, samples, fake.url, timeout_s=0.5))
    assert set(fake.seen_keys) == {f"Bearer {key}"}
    verdicts = {
        row["id"]: row for row in map(json.loads, (tmp_path / "out" / "verdicts.jsonl").read_text().splitlines())
    }
    assert verdicts["tuned-wins"]["pairwise"]["winner"] == "tuned"
    assert [o["pick"] for o in verdicts["tuned-wins"]["pairwise"]["orders"]] == ["tuned", "tuned"]
    assert verdicts["base-wins"]["pairwise"]["winner"] == "base"
    # a judge that always picks the first answer contradicts itself once the answers swap: no winner
    assert verdicts["biased"]["pairwise"]["winner"] == "inconsistent"
    assert verdicts["malformed"]["pairwise"] == {**verdicts["malformed"]["pairwise"], "winner": None}
    assert verdicts["malformed"]["pairwise"]["error"] == "malformed"
    assert "no JSON object" in verdicts["malformed"]["pairwise"]["orders"][0]["detail"]
    assert verdicts["slow"]["pairwise"]["winner"] is None and verdicts["slow"]["pairwise"]["error"] == "timeout"
    assert verdicts["slow"]["rubric"]["tuned"]["error"] == "timeout"
    assert verdicts["bad-score"]["pairwise"]["winner"] == "base"
    assert verdicts["bad-score"]["rubric"]["base"]["error"] == "malformed"
    assert verdicts["tuned-wins"]["rubric"]["tuned"] == {
        "relevance": 5.0, "clarity": 5.0, "completeness": 5.0, "accuracy": 5.0, "reasons": "Checked."
    }  # fmt: skip

    assert result["samples"] == 6 and result["judged"] == 4
    assert result["outcomes"] == {"tuned": 1, "base": 2, "tie": 0, "inconsistent": 1}
    # malformed: 2 pairwise + 2 rubric (q4) + 2 rubric (q6, score 9); timeout: 2 pairwise + 2 rubric (q5)
    assert result["errors"] == {"malformed": 6, "timeout": 4, "http": 0, "unreachable": 0}
    assert result["rubric"]["tuned"]["accuracy"] == pytest.approx((5 + 2 + 2) / 3)
    assert result["judge"] == {"name": "fake", "model": "judge-model"}


def test_a_judge_that_keeps_failing_stops_the_run_with_the_reason(
    tmp_path: Path, key: str, capsys: pytest.CaptureFixture[str], loopback_judges: None
) -> None:
    samples = [sample(f"s{i}", "SLOW", "a", "b") for i in range(5)]
    with FakeJudge(slow_s=1.0) as fake:
        code = judge.main(judge_job(tmp_path, samples, fake.url, timeout_s=0.2))
    assert code == 1 and fake.calls == 8  # two samples (4 calls each), then it gives up
    error = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["error"]
    assert error["code"] == "judge_unreachable" and error["params"]["count"] == 8
    assert not (tmp_path / "out" / "verdicts.jsonl").exists()


def test_unreachable_endpoint_and_no_samples(
    tmp_path: Path, key: str, capsys: pytest.CaptureFixture[str], loopback_judges: None
) -> None:
    samples = [sample("s1", "q", "a", "b"), sample("s2", "q", "a", "b")]
    assert judge.main(judge_job(tmp_path, samples, "http://127.0.0.1:9/v1", timeout_s=1)) == 1
    error = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["error"]
    assert error["code"] == "judge_unreachable" and "Connect" in error["params"]["detail"]
    assert judge.main(judge_job(tmp_path / "empty", [], "http://127.0.0.1:9/v1", timeout_s=1)) == 1
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["error"]["code"] == "no_samples"


@pytest.mark.parametrize(
    ("reply", "winner"),
    [
        ('{"winner": "B", "reason": "shorter"}', "B"),
        ('Sure! {"winner": "tie"} hope that helps', "tie"),
        ('```json\n{"winner": "a"}\n```', "A"),
    ],
)
def test_parse_winner_accepts_wrapped_json(reply: str, winner: str) -> None:
    assert judge.parse_winner(reply)[0] == winner


@pytest.mark.parametrize(
    "reply", ["A is better", '{"winner": "C"}', '{"winner": "A"', "[1, 2]", '{"relevance": 3, "clarity": 0}']
)
def test_malformed_replies_are_errors(reply: str) -> None:
    with pytest.raises(judge.JudgeError) as caught:
        judge.parse_rubric(reply) if "relevance" in reply else judge.parse_winner(reply)
    assert caught.value.kind == "malformed"
