"""Translations of pages: Babel catalogues (``translations/<locale>/LC_MESSAGES/messages.po``),
loaded at start-up, chosen per request from the ``locale`` cookie or Accept-Language.
"""

from __future__ import annotations

import contextvars
import gettext
import io
from pathlib import Path

from babel import Locale
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po

TRANSLATIONS_DIR = Path(__file__).parent / "translations"
DEFAULT_LOCALE = "en"
#: Locales offered in the switcher, with their own names.
LOCALES: dict[str, str] = {"en": "English", "zh-CN": "简体中文"}
LOCALE_COOKIE = "locale"

_current: contextvars.ContextVar[str] = contextvars.ContextVar("locale", default=DEFAULT_LOCALE)
_catalogues: dict[str, gettext.NullTranslations] = {}


def _load(code: str) -> gettext.NullTranslations:
    po_path = TRANSLATIONS_DIR / code.replace("-", "_") / "LC_MESSAGES" / "messages.po"
    if not po_path.exists():
        return gettext.NullTranslations()
    with po_path.open("rb") as handle:
        catalogue = read_po(handle, locale=code.replace("-", "_"))
    buffer = io.BytesIO()
    write_mo(buffer, catalogue)
    buffer.seek(0)
    return gettext.GNUTranslations(buffer)


def load_catalogues() -> None:
    """Compile every catalogue in memory (no generated files to keep in step)."""
    for code in LOCALES:
        _catalogues[code] = _load(code)


def _accepted_tags(accept_language: str) -> list[str]:
    """Accept-Language tags, best first, without those marked not acceptable (q=0) (RFC 9110 §12.5.4)."""
    weighted = []
    for position, part in enumerate(accept_language.split(",")):
        tag, _, params = part.strip().partition(";")
        quality = 1.0
        for param in params.split(";"):
            name, _, value = param.strip().partition("=")
            if name.lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        if tag.strip() and quality > 0:
            weighted.append((-quality, position, tag.strip()))
    return [tag for _q, _p, tag in sorted(weighted)]


def choose_locale(cookie: str | None, accept_language: str | None, default: str = DEFAULT_LOCALE) -> str:
    """The remembered choice if valid, else the best match of Accept-Language, else the default."""
    if cookie in LOCALES:
        return cookie
    offered = {code.lower(): code for code in LOCALES}
    tags = [tag.lower() for tag in _accepted_tags(accept_language or "")]
    # An exact match anywhere in the list beats a same-language match ("zh-TW,en" -> en).
    for tag in tags:
        if tag in offered:
            return offered[tag]
    by_language = {code.lower().split("-")[0]: code for code in LOCALES}
    for tag in tags:
        if (language := tag.split("-")[0]) in by_language:
            return by_language[language]
    return default if default in LOCALES else DEFAULT_LOCALE


def set_locale(code: str) -> contextvars.Token[str]:
    """Make ``code`` the locale of the current request."""
    return _current.set(code)


def current_locale() -> str:
    """The locale of the current request."""
    return _current.get()


def gettext_(message: str) -> str:
    """Translate ``message`` into the current locale."""
    catalogue = _catalogues.get(_current.get())
    return catalogue.gettext(message) if catalogue else message


def ngettext_(singular: str, plural: str, n: int) -> str:
    """Translate with plural forms."""
    catalogue = _catalogues.get(_current.get())
    if catalogue:
        return catalogue.ngettext(singular, plural, n)
    return singular if n == 1 else plural


def babel_locale() -> Locale:
    """The Babel locale of the current request, for dates and numbers."""
    return Locale.parse(_current.get(), sep="-")
