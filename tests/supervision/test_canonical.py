"""The ledger's canonical JSON: byte for byte what rfc8785 writes, for every JSON value (the fast path included)."""

from __future__ import annotations

import json
import uuid
from datetime import UTC
from typing import Any

import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from marketplace.core.events import Actor, DomainEvent
from supervision.canonical import _plain, canonical_json
from supervision.services import canonical_event

# Strings with control characters, quotes, backslashes, non-ASCII (BMP and beyond) and U+2028/U+2029.
TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs",)) | st.sampled_from('\x00\x1f\x7f"\\\b\f\n\r\t\u2028é中😀'))
KEYS = TEXT | st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E))
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**53) + 1, max_value=2**53 - 1)
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | TEXT
)
VALUES = st.recursive(
    SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(KEYS, inner, max_size=4), max_leaves=20
)


def _rfc8785(value: Any) -> bytes | None:
    try:
        return bytes(rfc8785.dumps(value))
    except (rfc8785.CanonicalizationError, ValueError, UnicodeError):
        return None


@settings(max_examples=400, deadline=None)
@given(VALUES)
def test_same_bytes_as_rfc8785(value: Any) -> None:
    expected = _rfc8785(value)
    if expected is None:
        with pytest.raises((rfc8785.CanonicalizationError, ValueError, UnicodeError)):
            canonical_json(value)
    else:
        assert canonical_json(value) == expected


@pytest.mark.parametrize(
    ("value", "fast"),
    [
        ({"b": 1, "a": ["x", None, True]}, True),
        ({"payload": {"rows": 100, "mode": "api"}, "orgs": ["0b5d", "1c2e"]}, True),
        ({"cost": 1.5}, False),  # floats: ECMAScript number formatting, left to rfc8785
        ({"n": 2**53}, False),  # outside the exact range
        ({"é": 1}, False),  # non-ASCII keys sort by UTF-16 code units
    ],
)
def test_fast_path_only_where_it_is_exact(value: Any, fast: bool) -> None:
    assert _plain(value) is fast
    expected = _rfc8785(value)
    if expected is None:  # 2**53: rfc8785 refuses it, and so does the ledger
        with pytest.raises(rfc8785.IntegerDomainError):
            canonical_json(value)
    else:
        assert canonical_json(value) == expected


def test_a_lone_surrogate_is_decided_by_rfc8785() -> None:
    value = {"text": "\ud800"}
    assert _plain(value)
    assert _rfc8785(value) is None
    with pytest.raises((rfc8785.CanonicalizationError, ValueError, UnicodeError)):
        canonical_json(value)


EVENTS = st.builds(
    lambda index, kind, actor_id, orgs, subjects, payload, moment, type_: (
        index,
        DomainEvent(type_, Actor(kind, actor_id), orgs=tuple(orgs), subjects=subjects, payload=payload, occurred_at=moment),
    ),
    st.integers(min_value=0, max_value=2**53 - 1) | st.integers(min_value=0),
    TEXT,
    TEXT,
    st.lists(st.uuids(), max_size=3),
    st.dictionaries(KEYS, TEXT | st.uuids(), max_size=4),
    st.dictionaries(KEYS, VALUES, max_size=4),
    st.datetimes(timezones=st.just(UTC)),
    TEXT,
)


@settings(max_examples=400, deadline=None)
@given(EVENTS)
def test_a_leaf_is_the_rfc8785_form_of_its_event(indexed: tuple[int, DomainEvent]) -> None:
    """Leaves put together from kept parts (actor, orgs, subjects) are byte for byte rfc8785's form of the event."""
    index, event = indexed
    document = {
        "index": index,
        "type": event.type,
        "time": event.occurred_at.isoformat(timespec="microseconds").replace("+00:00", "Z"),
        "actor": {"kind": event.actor.kind, "id": event.actor.id},
        "orgs": sorted(str(org) for org in event.orgs),
        "subjects": {key: str(value) for key, value in event.subjects.items()},
        "payload": dict(event.payload),
    }
    expected = _rfc8785(document)
    for _ in range(2):  # the second time from the kept parts
        if expected is None:
            with pytest.raises((rfc8785.CanonicalizationError, ValueError, UnicodeError)):
                canonical_event(index, event)
        else:
            assert canonical_event(index, event) == expected


def test_a_delivery_event_repeats_its_kept_parts_exactly() -> None:
    orgs = (uuid.uuid4(), uuid.uuid4())
    subjects = {"product": str(uuid.uuid4()), "licence": str(uuid.uuid4())}
    first = DomainEvent("delivery.recorded", Actor("client", "c1"), orgs=orgs, subjects=subjects, payload={"rows": 1})
    second = DomainEvent("delivery.recorded", Actor("client", "c1"), orgs=orgs, subjects=subjects, payload={"rows": 2})
    one, two = canonical_event(7, first), canonical_event(8, second)
    assert one != two
    assert json.loads(two)["payload"] == {"rows": 2}
    assert json.loads(two)["index"] == 8
    assert two == bytes(rfc8785.dumps(json.loads(two)))
