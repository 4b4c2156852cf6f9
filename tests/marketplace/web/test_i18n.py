"""Page languages: how a request's locale is chosen, and whether the Chinese catalogue is complete and current."""

from __future__ import annotations

import re
from collections.abc import Iterator
from http import HTTPStatus
from pathlib import Path

import pytest
from babel.messages.catalog import Catalog
from babel.messages.frontend import CommandLineInterface
from babel.messages.pofile import read_po
from litestar.testing import TestClient
from sqlalchemy import Engine

from marketplace.core.http import _STATUS_CODES
from marketplace.core.identity.schemas import CLIENT_SCOPES
from marketplace.core.principal import OrgKind, Role
from marketplace.web import i18n
from marketplace.web.i18n import choose_locale
from tests.factories import make_login_session, make_org, make_user

ROOT = Path(__file__).resolve().parents[3]
TRANSLATIONS = i18n.TRANSLATIONS_DIR
POT = TRANSLATIONS / "messages.pot"
ZH_PO = TRANSLATIONS / "zh_CN" / "LC_MESSAGES" / "messages.po"
PLACEHOLDER = re.compile(r"\{[a-zA-Z_][a-zA-Z0-9_]*\}")

# --- choosing the locale ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cookie", "accept_language", "expected"),
    [
        # A valid remembered choice wins over what the browser asks for.
        ("zh-CN", "en-US,en;q=0.9", "zh-CN"),
        ("en", "zh-CN,zh;q=0.9", "en"),
        # A cookie naming no offered locale is ignored.
        ("fr", "zh-CN", "zh-CN"),
        ("zh_CN", None, "en"),
        ("", "zh", "zh-CN"),
        ("", None, "en"),
    ],
)
def test_a_valid_cookie_wins(cookie: str, accept_language: str | None, expected: str) -> None:
    assert choose_locale(cookie, accept_language) == expected


@pytest.mark.parametrize(
    ("accept_language", "expected"),
    [
        ("zh-CN,zh;q=0.9", "zh-CN"),
        ("zh-CN", "zh-CN"),
        ("zh", "zh-CN"),
        ("zh-Hans-CN", "zh-CN"),
        # Decision: a reader of another Chinese variant gets the Simplified Chinese pages rather than English...
        ("zh-TW", "zh-CN"),
        ("zh-HK,zh;q=0.9", "zh-CN"),
        # ...unless they list a language we offer exactly.
        ("zh-TW,en;q=0.8", "en"),
        ("en-US", "en"),
        ("en-US,en;q=0.9,zh-CN;q=0.8", "en"),
        ("en-GB,en;q=0.9", "en"),
        # Quality values order the choices, whatever order they are written in.
        ("en;q=0.1,zh-CN;q=0.2", "zh-CN"),
        ("de, en;q=0.1, zh-CN;q=0.9", "zh-CN"),
        ("fr-FR,fr;q=0.9,zh;q=0.5", "zh-CN"),
        # Nothing offered: the default.
        ("fr-FR,fr;q=0.9", "en"),
        ("*", "en"),
        # Garbage: the default, never an error.
        ("garbage", "en"),
        ("", "en"),
        (None, "en"),
        (";;;,,,", "en"),
        ("zh-CN;q=abc,en;q=0.5", "en"),
        ("zh_CN", "en"),
        ("\x00\xff" * 10, "en"),
    ],
)
def test_accept_language_is_negotiated(accept_language: str | None, expected: str) -> None:
    assert choose_locale(None, accept_language) == expected


@pytest.mark.parametrize("accept_language", ["zh-cn", "ZH-CN,zh;q=0.9"])
def test_language_tags_are_case_insensitive(accept_language: str) -> None:
    assert choose_locale(None, accept_language) == "zh-CN"


def test_a_language_with_q_zero_is_refused() -> None:
    assert choose_locale(None, "zh-CN;q=0", default="en") == "en"


def test_the_default_applies_only_when_it_is_offered() -> None:
    assert choose_locale(None, None, default="zh-CN") == "zh-CN"
    assert choose_locale(None, "garbage", default="zh-CN") == "zh-CN"
    assert choose_locale(None, "en", default="zh-CN") == "en"
    assert choose_locale(None, None, default="xx") == i18n.DEFAULT_LOCALE


# --- the language in served pages ---------------------------------------------------------------


def test_pages_follow_accept_language_then_the_switcher(client: TestClient) -> None:  # type: ignore[type-arg]
    english = client.get("/login", headers={"accept-language": "en-US,en;q=0.9"})
    assert english.status_code == 200
    assert '<html lang="en">' in english.text
    assert "Sign in" in english.text

    chinese = client.get("/login", headers={"accept-language": "zh-CN,zh;q=0.9"})
    assert '<html lang="zh-CN">' in chinese.text
    assert "<h1" in chinese.text
    assert "登录" in chinese.text
    assert "Sign in" not in chinese.text

    switched = client.get("/lang/zh-CN", params={"next": "/login"}, follow_redirects=False)
    assert switched.status_code == 303
    assert switched.headers["location"] == "/login"
    assert client.cookies.get(i18n.LOCALE_COOKIE) == "zh-CN"
    remembered = client.get("/login", headers={"accept-language": "en-US"})
    assert '<html lang="zh-CN">' in remembered.text


def test_the_switcher_ignores_unknown_locales_and_foreign_targets(client: TestClient) -> None:  # type: ignore[type-arg]
    unknown = client.get("/lang/fr", params={"next": "/login"}, follow_redirects=False)
    assert unknown.status_code == 303
    assert i18n.LOCALE_COOKIE not in unknown.cookies
    for target in ("https://elsewhere.example/", "//elsewhere.example/", "/\\elsewhere.example"):
        away = client.get("/lang/en", params={"next": target}, follow_redirects=False)
        assert away.headers["location"] == "/"


# --- the catalogues -----------------------------------------------------------------------------


def _read(path: Path) -> Catalog:
    with path.open("rb") as handle:
        return read_po(handle)


def _ids(catalogue: Catalog) -> set[str]:
    return {str(message.id) for message in catalogue if message.id}


@pytest.fixture(scope="module")
def pot() -> Catalog:
    return _read(POT)


@pytest.fixture(scope="module")
def zh() -> Catalog:
    return _read(ZH_PO)


def runtime_messages() -> set[str]:
    """Strings shown through _() whose values live in code, out of reach of extraction."""
    return (
        set(CLIENT_SCOPES.values())  # clients.html: {{ _(description) }}
        | {role.value for role in Role}  # {{ _(role.value) }}
        | {HTTPStatus(status).phrase for status in _STATUS_CODES}  # error.html: {{ _(title) }}
    )


def test_every_extracted_message_has_a_chinese_translation(pot: Catalog, zh: Catalog) -> None:
    missing, fuzzy = [], []
    for message in pot:
        if not message.id:
            continue
        translated = zh.get(message.id)
        if translated is None or not translated.string or not str(translated.string).strip():
            missing.append(message.id)
        elif translated.fuzzy:
            fuzzy.append(message.id)
    assert not missing, f"untranslated in {ZH_PO.relative_to(ROOT)}: {missing}"
    assert not fuzzy, f"fuzzy (not used) in {ZH_PO.relative_to(ROOT)}: {fuzzy}"


def test_messages_shown_from_code_values_are_translated(zh: Catalog) -> None:
    missing = sorted(m for m in runtime_messages() if not (zh.get(m) and zh.get(m).string and not zh.get(m).fuzzy))
    assert not missing, f"add these to {ZH_PO.relative_to(ROOT)}: {missing}"


def test_the_chinese_catalogue_holds_nothing_stale(pot: Catalog, zh: Catalog) -> None:
    stale = sorted(_ids(zh) - _ids(pot) - runtime_messages())
    assert not stale, f"translations of messages no page shows any more: {stale}"
    assert not zh.obsolete, f"obsolete (#~) entries: {list(zh.obsolete)}"


def test_translations_keep_their_placeholders(zh: Catalog) -> None:
    for message in zh:
        if message.id and message.string:
            assert sorted(PLACEHOLDER.findall(str(message.id))) == sorted(PLACEHOLDER.findall(str(message.string))), message.id


def test_the_template_is_up_to_date_with_the_sources(pot: Catalog, tmp_path: Path) -> None:
    """The same command as babel.cfg documents, into a temporary file."""
    fresh = tmp_path / "messages.pot"
    CommandLineInterface().run(
        ["pybabel", "-q", "extract", "-F", str(ROOT / "babel.cfg"), "-k", "_n", "-k", "_", "-o", str(fresh), str(ROOT)]
    )
    extracted = _ids(_read(fresh))
    assert extracted, "extraction found nothing: is babel.cfg right?"
    how = (
        "run `.venv/bin/pybabel extract -F babel.cfg -k _n -k _ -o marketplace/web/translations/messages.pot .` "
        "and translate the new messages in zh_CN"
    )
    assert not sorted(extracted - _ids(pot)), f"messages.pot lacks new messages: {how}"
    assert not sorted(_ids(pot) - extracted), f"messages.pot holds messages no source has any more: {how}"


@pytest.fixture
def zh_locale() -> Iterator[None]:
    i18n.load_catalogues()
    token = i18n.set_locale("zh-CN")
    yield
    i18n._current.reset(token)


@pytest.mark.usefixtures("zh_locale")
def test_the_loaded_catalogue_uses_the_glossary_terms() -> None:
    """DESIGN.md §10: the words of each party, in the compiled catalogue the app uses."""
    _ = i18n.gettext_
    assert _("Data authority") == "数据主管部门"
    assert _("Operator") == "授权运营单位"
    assert _("Regulator") == "监管部门"
    assert _("Third-party auditor") == "第三方审计机构"
    assert _("Public data authorised operation") == "公共数据授权运营"
    assert _("Separation of management and operation") == "管运分离"
    assert _("admin") == "管理员"
    assert _("member") == "成员"
    assert "{seconds}" in _("Too many failed sign-ins. Try again in {seconds} seconds.")
    assert _("A message nobody translated") == "A message nobody translated"


def test_not_found_page_speaks_the_visitors_language(client: TestClient) -> None:
    response = client.get("/no/such/page", headers={"accept": "text/html", "accept-language": "zh-CN"})
    assert response.status_code == 404
    assert 'lang="zh-CN"' in response.text
    client.cookies.set("locale", "en")
    english = client.get("/no/such/page", headers={"accept": "text/html", "accept-language": "zh-CN"})
    assert 'lang="en"' in english.text


def test_pages_name_the_organisation_in_the_page_language(client: TestClient, engine: Engine) -> None:
    org = make_org(engine, OrgKind.operator, name="Harbour Data Operations Test", name_zh="港湾数据运营测试")
    client.cookies.set("market_session", make_login_session(engine, make_user(engine, org)))
    chinese = client.get("/", headers={"accept-language": "zh-CN"}).text
    assert "港湾数据运营测试" in chinese
    english = client.get("/", headers={"accept-language": "en"}).text
    assert "Harbour Data Operations Test" in english
    assert "港湾数据运营测试" not in english
