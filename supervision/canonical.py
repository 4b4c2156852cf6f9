"""RFC 8785 (JSON Canonicalization Scheme) for ledger leaves, fast for the documents the platform writes.

``rfc8785`` is exact for every JSON value but written in Python; a busy delivery plane appends thousands of events a
second. For documents made only of strings, integers within IEEE 754's exact range, booleans, nulls, arrays and
objects with ASCII keys, RFC 8785 and ``json.dumps(sort_keys=True, separators=(",", ":"), ensure_ascii=False)``
produce the same bytes: RFC 8785 sorts keys by UTF-16 code units (the same order as code points for ASCII), writes
strings as ECMAScript does (``"``, ``\\`` and control characters escaped, ``\\b \\t \\n \\f \\r`` in short form,
others as lowercase ``\\u00xx``, everything else literal) and integers in the safe range as decimal digits.
Anything else (floats, large integers, non-ASCII keys, lone surrogates) goes to ``rfc8785``.
"""

from __future__ import annotations

import json
from typing import Any

import rfc8785

#: Integers RFC 8785 writes exactly (IEEE 754 doubles represent them exactly).
SAFE_INTEGER = 2**53 - 1
_encode = json.JSONEncoder(ensure_ascii=False, allow_nan=False, sort_keys=True, separators=(",", ":")).encode


def is_plain(value: Any) -> bool:
    """Whether ``value`` holds only strings, safe integers, booleans, nulls, arrays and objects with ASCII keys."""
    return _plain(value)


def _plain(value: Any) -> bool:
    if isinstance(value, str) or value is None or isinstance(value, bool):
        return True
    if isinstance(value, int):
        return -SAFE_INTEGER <= value <= SAFE_INTEGER
    if isinstance(value, dict):
        return all(isinstance(k, str) and k.isascii() and _plain(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return all(_plain(v) for v in value)
    return False


def canonical_text(value: Any) -> str:
    """The canonical JSON text of a value already known to be plain (see :func:`is_plain`), as ``str``: parts of a
    larger canonical document are put together from such texts. A lone surrogate only fails when the whole text is
    encoded to UTF-8 (``UnicodeEncodeError``), which the caller must treat as not plain."""
    return _encode(value)


def canonical_json(document: Any, *, plain: bool | None = None) -> bytes:
    """The RFC 8785 canonical UTF-8 bytes of ``document``. ``plain=True``: the caller knows the document is made
    only of the plain values above (it skips the check)."""
    if plain if plain is not None else _plain(document):
        try:
            return _encode(document).encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate: rfc8785 decides
            pass
    return bytes(rfc8785.dumps(document))
