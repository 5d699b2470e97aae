"""The floors of cleaning quality on the labelled set (bench/cleaning_set.py): a change that breaks a detector
fails here. The figures themselves are bench/cleaning_quality.py's (bench/results/cleaning_quality.md)."""

from __future__ import annotations

from typing import Any

import pytest

from app.cleaning import pii
from app.cleaning.recipe import DEFAULT_RECIPE
from bench.cleaning_quality import duplicate_quality, injection_quality, pii_quality
from bench.cleaning_set import Case, build


@pytest.fixture(scope="module")
def cases() -> list[Case]:
    return build()


def test_injection_recall_in_both_languages_without_flagging_the_hard_negatives(cases: list[Case]) -> None:
    report = injection_quality(cases)
    recall, false = report["recall"], report["false_positives"]
    assert recall["en"]["rate"] >= 0.9 and recall["zh"]["rate"] >= 0.9, report["missed"]
    for category in ("override", "extraction", "persona", "developer_mode"):  # hijacking is the hardest: 7 of 9
        for lang in ("en", "zh"):
            assert recall[f"{lang}/{category}"]["rate"] >= 0.8, (lang, category, report["missed"])
    # the code tutorials, version strings and innocent "ignore", "pretend", "developer mode" pass
    assert false["hard_negative/en"]["rate"] <= 0.02 and false["hard_negative/zh"]["rate"] <= 0.02, report[
        "false_alarms"
    ]
    assert false["clean"]["rate"] <= 0.01, report["false_alarms"]


def test_every_pii_kind_is_found_and_its_traps_are_not(cases: list[Case]) -> None:
    report = pii_quality(cases)
    assert set(report["recall"]) == set(pii.KINDS)
    for kind, rate in report["recall"].items():
        assert rate["rate"] >= 0.95, kind
    assert report["false_positives"]["hard_negative"]["hits"] == 0, report["false_alarms"]
    assert report["false_positives"]["clean"]["rate"] <= 0.005, report["false_alarms"]


# each detector's false-positive traps: text that looks like its kind and is not personal data
TRAPS: dict[str, list[str]] = {
    "ip": [
        "Install version 2.4.1.3 first, then restart.",
        "It was fixed in v10.2.3.1.",
        "Firmware 1.0.12.4 adds Wi-Fi 6.",
        "先装 2.4.1.3，再重启服务。",
        "升级说明：版本号：3.1.0.7",
        "Bind the server to `0.0.0.0` or `192.168.1.20` in the config.",
    ],
    "phone": [
        "Order number 2023110512345 left the warehouse.",
        "ISBN 978-3-16-148410-0 is the second edition.",
        "The timestamp 1700000000 is in 2023.",
        "Call `tel:+1-555-0100` in the example markup.",
    ],
    "credit_card": [
        "Order 2023110512345 shipped.",
        "Part number 4006381333931 in the catalogue.",
        "1111 1111 1111 1111",
    ],
    "email": ["Clone it with `git@github.com:org/repo.git`.", "Use the @decorator syntax."],
    "cn_id": ["The tracking number is 110105199013011234 (not a checksum-valid ID)."],
    "iban": ["The product code DE12 ABCD is on the box."],
}
# and each detector finds its kind beside Chinese text and at a sentence's end
FOUND: dict[str, list[str]] = {
    "ip": ["My server is 52.14.3.9.", "服务器地址是52.14.3.9。"],
    "email": ["请联系li.wei95@mail.example.org。", "Write to anna@example.com."],
    "phone": ["请拨打13812345678联系我。", "Call (415) 555-0123."],
}


@pytest.mark.parametrize(("kind", "text"), [(k, t) for k, texts in TRAPS.items() for t in texts])
def test_pii_traps(kind: str, text: str) -> None:
    assert [s for s in pii.find(text) if s.kind == kind] == []


@pytest.mark.parametrize(("kind", "text"), [(k, t) for k, texts in FOUND.items() for t in texts])
def test_pii_found_beside_chinese_and_punctuation(kind: str, text: str) -> None:
    assert [s.kind for s in pii.find(text)] == [kind]


def test_duplicates_exact_near_and_paraphrased_with_the_default_recipe(cases: list[Case]) -> None:
    from worker.cleaning.embed import Embedder

    report: dict[str, Any] = duplicate_quality(cases, DEFAULT_RECIPE, embed=Embedder())
    for kind in ("exact", "near", "paraphrase"):
        assert report["recall"][kind]["rate"] >= 0.9, (kind, report["recall"])
    assert report["false_positives"]["clean"]["rate"] <= 0.01, report["false_alarms"]
