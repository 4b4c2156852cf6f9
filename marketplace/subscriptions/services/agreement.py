"""The platform's data use agreement, versioned in code: every subscription carries the version its buyer accepted,
and only the current version is accepted for a new subscription.

A new version is a new entry in :data:`AGREEMENT_VERSIONS` with a later effective date; from that day on it is the
current one, and a subscription naming an older version is refused (``agreement_outdated``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from marketplace.core.errors import Conflict
from marketplace.core.types import utcnow


@dataclass(frozen=True)
class Agreement:
    """One version of the data use agreement, in English and Chinese."""

    version: str
    effective_on: date
    title: str
    title_zh: str
    text: str
    text_zh: str


_TEXT_2026_11 = """\
1. Purpose. The buyer uses the data only for the purpose it declared when subscribing, and within the purposes the \
franchise licence permits. Any other use needs a new subscription.
2. No re-identification. The buyer does not try to identify any person or household in the data, nor link the data \
with other sources for that end.
3. No onward transfer. The buyer does not sell, publish or pass the data, or copies of it, to anyone else. Files \
carry a fingerprint that traces a leaked copy to its subscription.
4. Security. The buyer keeps its API credentials secret, stores the data securely and deletes it when the \
subscription ends, unless the law requires otherwise.
5. Supervision. Every delivery is recorded in the platform's verifiable ledger and may be inspected by the \
regulator and accredited auditors. The operator may suspend or revoke access, with a written reason, when these \
terms are broken or the licence ends.
6. Proofs. A buyer claiming a public-welfare or research reduction keeps the proof it uploaded true and current."""

_TEXT_ZH_2026_11 = """\
一、用途。买方仅将数据用于订阅时声明的用途，且不超出特许经营授权许可的用途范围。其他用途须另行订阅。
二、禁止重新识别。买方不得试图识别数据中的任何个人或家庭，也不得为此将数据与其他来源关联。
三、禁止转让。买方不得出售、公开或向他人提供数据或其副本。导出文件带有指纹，泄露的副本可追溯至其订阅。
四、安全。买方妥善保管API凭证，安全存储数据，并在订阅结束时删除数据，法律另有规定的除外。
五、监管。每次交付均记入平台可验证账本，监管机构和经认可的审计机构可以查阅。买方违反本协议或授权终止时，运营方可书面说明理由后暂停或撤销访问。
六、证明材料。申请公益或科研减免的买方应保证所上传证明材料真实有效。"""  # noqa: RUF001 (Chinese text uses full-width punctuation)

#: Every version of the agreement, oldest first. The current one is the latest already in effect.
AGREEMENT_VERSIONS: tuple[Agreement, ...] = (
    Agreement(
        version="2026-11",
        effective_on=date(2026, 11, 1),
        title="Data use agreement",
        title_zh="数据使用协议",
        text=_TEXT_2026_11,
        text_zh=_TEXT_ZH_2026_11,
    ),
)


def current_agreement(on: date | None = None) -> Agreement:
    """The agreement in effect on a day (today by default): the latest version whose effective date has come."""
    day = on or utcnow().date()
    in_effect = [a for a in AGREEMENT_VERSIONS if a.effective_on <= day]
    return in_effect[-1] if in_effect else AGREEMENT_VERSIONS[0]


def require_current_agreement(version: str, on: date | None = None) -> Agreement:
    """The current agreement when ``version`` names it; otherwise Conflict ``agreement_outdated``."""
    current = current_agreement(on)
    if version != current.version:
        raise Conflict(
            f"The data use agreement in effect is version {current.version}; read and accept it (you sent {version!r}).",
            code="agreement_outdated",
            current_version=current.version,
        )
    return current
