"""Interface language: gettext catalogues (Babel) chosen per request.

Catalogues live in ``app/i18n/<locale>/LC_MESSAGES/messages.po`` and are compiled in memory at start-up,
so there is no generated binary to keep in sync. ``pybabel extract -F babel.cfg`` refreshes the template.
"""

from __future__ import annotations

import gettext as _gettext
import io
from contextvars import ContextVar
from datetime import datetime
from functools import lru_cache
from pathlib import Path

from babel import Locale
from babel.dates import format_datetime as _format_datetime
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.numbers import format_decimal

DEFAULT_LOCALE = "en"
# code -> name shown in the switcher (each in its own language)
LOCALES: dict[str, str] = {"en": "English", "zh_Hans": "简体中文"}
CATALOGUE_DIR = Path(__file__).resolve().parents[1] / "i18n"

_current: ContextVar[str] = ContextVar("refinery_locale", default=DEFAULT_LOCALE)


@lru_cache
def translations(locale: str) -> _gettext.NullTranslations:
    po_path = CATALOGUE_DIR / locale / "LC_MESSAGES" / "messages.po"
    if locale == DEFAULT_LOCALE or not po_path.exists():
        return _gettext.NullTranslations()
    with po_path.open("rb") as handle:
        catalog = read_po(handle, locale=locale)
    buffer = io.BytesIO()
    write_mo(buffer, catalog, use_fuzzy=False)
    buffer.seek(0)
    return _gettext.GNUTranslations(buffer)


def set_locale(locale: str) -> None:
    _current.set(locale if locale in LOCALES else DEFAULT_LOCALE)


def get_locale() -> str:
    return _current.get()


def gettext(message: str, **variables: object) -> str:
    text = translations(get_locale()).gettext(message)
    return text % variables if variables else text


def ngettext(singular: str, plural: str, n: int, **variables: object) -> str:
    text = translations(get_locale()).ngettext(singular, plural, n)
    return text % {"num": n, **variables}


_ = gettext


def N_(message: str) -> str:
    return message


def negotiate(accept_language: str | None) -> str:
    """Pick a supported locale from an Accept-Language header (q-values respected)."""
    if not accept_language:
        return DEFAULT_LOCALE
    choices: list[tuple[float, int, str]] = []
    for index, part in enumerate(accept_language.split(",")):
        piece = part.strip()
        if not piece:
            continue
        lang, _sep, params = piece.partition(";")
        quality = 1.0
        if params.strip().startswith("q="):
            try:
                quality = float(params.strip()[2:])
            except ValueError:
                quality = 0.0
        choices.append((-quality, index, lang.strip().lower()))
    for _q, _i, lang in sorted(choices):
        if lang.startswith("zh"):
            return "zh_Hans"
        if lang.startswith("en"):
            return "en"
    return DEFAULT_LOCALE


def babel_locale() -> Locale:
    return Locale.parse(get_locale())


def format_dt(value: datetime | None) -> str:
    if value is None:
        return "—"
    return str(_format_datetime(value, format="medium", locale=babel_locale()))


def format_number(value: float | int | None) -> str:
    if value is None:
        return "—"
    return str(format_decimal(value, locale=babel_locale()))
