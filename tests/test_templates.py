"""Every template compiles. A template with a syntax error would also be skipped silently by the message
extraction (.ci/i18n-extract), dropping its translations from the catalogue."""

from __future__ import annotations

from app.core.templating import ROOT, templates


def test_every_template_compiles() -> None:
    names = sorted(str(p.relative_to(ROOT / "templates")) for p in (ROOT / "templates").rglob("*.html"))
    assert len(names) > 30
    for name in names:
        templates.env.get_template(name)
