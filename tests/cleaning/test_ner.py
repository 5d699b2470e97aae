"""Name detection in the PII step with an NER model the administrator installs (none ships on PyPI with its
weights, so the model here is a tiny BERT whose weights are set by hand to tag three words as people: the
loading, the token-to-text mapping, the windows over long texts and the redaction are ours and are real)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from app.cleaning.ops import Cleaner
from app.cleaning.recipe import validate_steps
from app.cleaning.service import ner_model_problem
from app.core.config import get_settings
from tests.cleaning.test_flow import _chat, _upload
from worker import lifecycle
from worker.cleaning.ner import NameFinder

WORDS = ["alice", "smith", "bob", "met", "at", "the", "park", "and", "talked", "."]


@pytest.fixture(scope="module")
def ner_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A BERT with no attention layers: each token's label comes from its own embedding. "alice" and "bob"
    begin a person, "smith" continues one; every other token is outside."""
    import torch
    from transformers import BertConfig, BertForTokenClassification, BertTokenizerFast

    out = tmp_path_factory.mktemp("ner")
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]
    tokenizer = BertTokenizerFast(vocab={word: n for n, word in enumerate(words)}, do_lower_case=True)
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=8,
        num_hidden_layers=0,
        num_attention_heads=1,
        intermediate_size=8,
        id2label={0: "O", 1: "B-PER", 2: "I-PER"},
        label2id={"O": 0, "B-PER": 1, "I-PER": 2},
    )
    model = BertForTokenClassification(config)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.zero_()
        model.bert.embeddings.LayerNorm.weight.fill_(1.0)
        vocab = tokenizer.get_vocab()
        model.bert.embeddings.word_embeddings.weight[vocab["alice"], 0] = 10.0
        model.bert.embeddings.word_embeddings.weight[vocab["bob"], 0] = 10.0
        model.bert.embeddings.word_embeddings.weight[vocab["smith"], 1] = 10.0
        model.classifier.weight[1, 0] = 1.0
        model.classifier.weight[2, 1] = 1.0
        model.classifier.bias[0] = 1.0
    model.save_pretrained(str(out), safe_serialization=True)
    tokenizer.save_pretrained(str(out))
    return out


def test_names_are_found_in_short_and_long_texts(ner_dir: Path) -> None:
    finder = NameFinder(ner_dir)
    text = "Alice Smith met Bob at the park."
    long = " ".join(["the park"] * 400) + " and bob talked."
    found = finder([text, "nobody here.", long])
    assert [text[a:b] for a, b in found[0]] == ["Alice Smith", "Bob"]
    assert found[1] == []
    assert [long[a:b] for a, b in found[2]] == ["bob"]  # beyond the first window of 256 tokens


def test_the_pii_step_redacts_names_with_the_other_kinds(ner_dir: Path) -> None:
    steps = validate_steps([{"op": "pii", "params": {"names": True, "style": "pseudonym"}}])
    cleaner = Cleaner(steps, salt="s", find_names=NameFinder(ner_dir))
    outcome = cleaner.process("1", "chat", _chat("Alice Smith met Bob at the park.", "Mail alice@example.org, Bob."))
    assert outcome.data is not None
    question, answer = (m["content"] for m in outcome.data["messages"])
    assert "Alice" not in question and "Bob" not in question and question.endswith(" at the park.")
    assert question.count("<NAME_") == 2 and "<EMAIL_" in answer and "<NAME_" in answer
    # the same name gets the same stand-in everywhere in the cleaning
    assert question.split(" met ")[1].split(" ")[0] == answer.split(", ")[1].rstrip(".")
    spans = outcome.decisions[0].evidence["spans"]
    assert {(s["kind"], s["text"]) for s in spans} == {
        ("name", "Alice Smith"),
        ("name", "Bob"),
        ("email", "alice@example.org"),
    }
    without = Cleaner(validate_steps([{"op": "pii"}]), salt="s")  # names are asked for, not assumed
    assert without.process("1", "chat", _chat("Alice Smith met Bob.", "Hi.")).decisions == []


def test_the_model_is_checked_before_a_run(ner_dir: Path, tmp_path: Path) -> None:
    assert ner_model_problem(ner_dir) is None
    assert "none is installed" in (ner_model_problem(None) or "")
    (tmp_path / "config.json").write_text('{"id2label": {"0": "O", "1": "B-LOC"}}')
    assert "safetensors" in (ner_model_problem(tmp_path) or "")
    (tmp_path / "model.safetensors").write_bytes(b"")
    (tmp_path / "tokenizer.json").write_text("{}")
    assert "person label" in (ner_model_problem(tmp_path) or "")


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_names_through_the_api(
    client: Any, setup: dict[str, Any], tmp_path: Path, ner_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dataset_id, version_id = _upload(client, tmp_path, [_chat("Alice Smith met Bob at the park.", "Hello Alice.")])
    steps = {"steps": [{"op": "pii", "params": {"names": True}}]}
    url = f"/api/v1/datasets/{dataset_id}/versions/{version_id}/cleanings"
    refused = client.post(url, json=steps)
    assert refused.status_code == 422 and refused.json()["error"]["field"] == "steps.0.names"
    assert "REFINERY_NER_MODEL" in refused.json()["error"]["message"]

    monkeypatch.setenv("REFINERY_NER_MODEL", str(ner_dir))
    get_settings.cache_clear()
    started = client.post(url, json=steps)
    assert started.status_code == 202, started.text
    lifecycle.execute(started.json()["run"]["id"])
    decided = client.get(f"/api/v1/cleanings/{started.json()['id']}/decisions").json()["items"]
    assert [d["reason"] for d in decided] == ["pii_redacted"]
    assert "<NAME> met <NAME> at the park." in decided[0]["evidence"]["after"]
    assert "Hello <NAME>." in decided[0]["evidence"]["after"]
    get_settings.cache_clear()
