"""Both languages are complete: every user-facing string is marked, extracted, translated and current."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest
from babel.messages.pofile import read_po

from app.core import i18n
from tests.conftest import ROOT

PO = ROOT / "app" / "i18n" / "zh_Hans" / "LC_MESSAGES" / "messages.po"
JINJA = re.compile(r"\{\{.*?\}\}|\{%.*?%\}|\{#.*?#\}", re.S)
# Text that is the same in every language: the product name, symbols, examples of identifiers.
NOT_PROSE = re.compile(r"^([\W\d_]+|[\w.-]*/[\w./-]+)$")
TEXT_ATTRIBUTES = {"placeholder", "title", "aria-label", "alt"}
DOMAIN_ERRORS = {
    "RefineryError",
    "NotFound",
    "Forbidden",
    "Unauthorized",
    "Conflict",
    "InvalidInput",
    "ServiceUnavailable",
}
PLACEHOLDER = re.compile(r"%\((\w+)\)s")


def _extract(tmp_path: Path) -> set[str]:
    pot = tmp_path / "messages.pot"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "babel.messages.frontend",
            "extract",
            "-F",
            "babel.cfg",
            "-k",
            "_",
            "-k",
            "gettext",
            "-k",
            "ngettext:1,2",
            "-k",
            "N_",
            "--no-location",
            "-o",
            str(pot),
            ".",
        ],
        cwd=ROOT,
        check=True,
        capture_output=True,
        timeout=120,
    )
    with pot.open("rb") as handle:
        return {m.id if isinstance(m.id, str) else m.id[0] for m in read_po(handle) if m.id}


def _catalogue() -> dict[str, tuple[str, bool]]:
    with PO.open("rb") as handle:
        catalog = read_po(handle, locale="zh_Hans")
    return {
        (m.id if isinstance(m.id, str) else m.id[0]): (m.string if isinstance(m.string, str) else m.string[0], m.fuzzy)
        for m in catalog
        if m.id
    }


def test_catalogue_is_complete_translated_and_not_stale(tmp_path: Path) -> None:
    extracted = _extract(tmp_path)
    catalogue = _catalogue()
    missing = sorted(extracted - set(catalogue))
    stale = sorted(set(catalogue) - extracted)
    untranslated = sorted(k for k, (v, fuzzy) in catalogue.items() if not v or fuzzy)
    hint = "run .ci/i18n-extract, then translate the new entries in " + str(PO.relative_to(ROOT))
    assert missing == [], f"strings not in the zh_Hans catalogue ({hint})"
    assert stale == [], f"catalogue entries no longer used ({hint})"
    assert untranslated == [], f"entries without a Chinese translation ({hint})"


def test_translations_keep_their_placeholders() -> None:
    for msgid, (msgstr, _fuzzy) in _catalogue().items():
        assert sorted(PLACEHOLDER.findall(msgid)) == sorted(PLACEHOLDER.findall(msgstr)), msgid


class _TextCollector(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("script", "style", "pre", "code"):
            self._skip += 1
        for name, value in attrs:
            if name in TEXT_ATTRIBUTES and value and value.strip():
                self.found.append(value.strip())

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style", "pre", "code") and self._skip:
            self._skip -= 1

    def handle_data(self, data: str) -> None:
        if not self._skip and data.strip():
            self.found.append(data.strip())


@pytest.mark.parametrize(
    "template", sorted(p.relative_to(ROOT / "templates").as_posix() for p in (ROOT / "templates").rglob("*.html"))
)
def test_template_text_is_marked_for_translation(template: str) -> None:
    source = (ROOT / "templates" / template).read_text()
    collector = _TextCollector()
    collector.feed(JINJA.sub(" ", source))
    unmarked = [
        text
        for text in collector.found
        # the product name, the "v" of version numbers (v1) and units (GB) are the same in every language
        if re.search(r"[A-Za-z]", re.sub(r"\b(v|GB)\b", "", text.replace("Refinery", ""))) and not NOT_PROSE.match(text)
    ]
    assert unmarked == [], f"wrap these in {{{{ _('…') }}}} in templates/{template}"


def _bare_strings_in_raises(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call) and node.exc.args:
            first = node.exc.args[0]
            name = node.exc.func.id if isinstance(node.exc.func, ast.Name) else ""
            if name in DOMAIN_ERRORS and isinstance(first, ast.Constant | ast.JoinedStr):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    return found


def test_user_facing_errors_in_the_web_app_are_marked() -> None:
    offenders = [
        hit
        for path in (ROOT / "app").rglob("*.py")
        if path.name != "config.py"
        for hit in _bare_strings_in_raises(path)
    ]
    assert offenders == [], "wrap the message in _() from app.core.i18n"


def test_accept_language_negotiation_and_locale_formats() -> None:
    assert i18n.negotiate("zh-CN,zh;q=0.9,en;q=0.8") == "zh_Hans"
    assert i18n.negotiate("en-US,en;q=0.9") == "en"
    assert i18n.negotiate("fr-FR, zh-TW;q=0.5") == "zh_Hans"
    assert i18n.negotiate("de-DE") == "en" and i18n.negotiate(None) == "en" and i18n.negotiate("zh;q=bad") == "zh_Hans"
    from datetime import UTC, datetime

    moment = datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)
    i18n.set_locale("zh_Hans")
    try:
        assert "2026年3月4日" in i18n.format_dt(moment)
        assert i18n._("Models") == "模型"
        assert i18n._("User %(email)s created.", email="a@b.c") == "已创建用户 a@b.c。"
    finally:
        i18n.set_locale("en")
    assert "Mar 4, 2026" in i18n.format_dt(moment) and i18n.format_number(8192) == "8,192"


def test_run_texts_are_stored_as_codes_and_shown_in_the_readers_language() -> None:
    from app.runs.messages import TEXTS, describe, english

    reason = {"code": "killed", "params": {"signal": 9}}
    params = {"reason": reason, "attempt": 2}
    assert english("requeued", params) == "The job process was killed by signal 9. Re-queued for attempt 2."
    i18n.set_locale("zh_Hans")
    try:
        assert describe("requeued", params) == "任务进程被信号 9 终止。 已重新排队，进行第 2 次尝试。"
        assert describe(None, None, "fallback") == "fallback"
    finally:
        i18n.set_locale("en")
    catalogue = _catalogue()
    assert all(template in catalogue for code, template in TEXTS.items() if code != "plain")


def test_validation_errors_read_in_the_readers_language() -> None:
    from pydantic import ValidationError

    from app.core.validation import describe_error
    from app.jobs.spec import TrainingSpec

    try:
        TrainingSpec.model_validate({"learning_rate": 0, "batch_size": "many"})
    except ValidationError as exc:
        errors = [dict(e) for e in exc.errors()]
    assert describe_error(errors[0]) == "learning_rate: Must be greater than 0."
    i18n.set_locale("zh_Hans")
    try:
        assert describe_error(errors[0]) == "learning_rate: 必须大于 0。"
        assert describe_error(errors[1]) == "batch_size: 必须是整数。"
    finally:
        i18n.set_locale("en")
