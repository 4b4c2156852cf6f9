"""The ledger on a real database: recording in the caller's transaction, proofs from stored hashes,
signed checkpoints, and the self-check catching changes made directly in SQL."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import Engine, text
from sqlmodel.ext.asyncio.session import AsyncSession

from marketplace.core.db import Database
from marketplace.core.settings import Settings
from supervision import merkle, services
from supervision.export import export_lines
from supervision.note import NoteError, open_checkpoint, parse_vkey
from supervision.signing import LedgerSigner, load_ledger_signer
from tests.supervision.ledger_helpers import event, run


def _record(database_url: str, count: int, start: int = 0) -> list[int]:
    async def work(session: AsyncSession) -> list[int]:
        indices = [await services.record(session, event(start + i)) for i in range(count)]
        await session.commit()
        return indices

    return run(database_url, work)


def _leaf_hashes(engine: Engine) -> list[bytes]:
    with engine.connect() as conn:
        return [bytes(row[0]) for row in conn.execute(text("SELECT leaf_hash FROM ledger_entry ORDER BY leaf_index"))]


def test_events_get_contiguous_indices_and_a_rollback_leaves_none(database_url: str, engine: Engine) -> None:
    assert _record(database_url, 3) == [0, 1, 2]

    async def rolled_back(session: AsyncSession) -> int:
        index = await services.record(session, event(99))
        await session.rollback()
        return index

    assert run(database_url, rolled_back) == 3
    assert _record(database_url, 2, start=3) == [3, 4], "the rolled-back index is given back"
    assert len(_leaf_hashes(engine)) == 5


def test_leaf_is_the_canonical_json_of_the_event(database_url: str, engine: Engine) -> None:
    _record(database_url, 1)
    with engine.connect() as conn:
        leaf_input, leaf_hash = conn.execute(text("SELECT leaf_input, leaf_hash FROM ledger_entry")).one()
    document = json.loads(leaf_input)
    assert document["index"] == 0
    assert document["type"] == "test.happened"
    assert document["payload"] == {"n": 0}
    assert leaf_input == json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert bytes(leaf_hash) == merkle.leaf_hash(leaf_input.encode())


@pytest.mark.parametrize("size", [1, 2, 7, 64, 101])
def test_roots_and_proofs_from_stored_hashes_match_the_reference(database_url: str, engine: Engine, size: int) -> None:
    _record(database_url, size)
    tree = merkle.MemoryTree(_leaf_hashes(engine))

    async def check(session: AsyncSession) -> None:
        current, root = await services.head(session)
        assert (current, root) == (size, tree.root())
        for tree_size in {1, size // 2 or 1, size}:
            assert await services.root_at(session, tree_size) == tree.root(tree_size)
            for index in {0, tree_size // 2, tree_size - 1}:
                path = await services.inclusion_proof(session, index, tree_size)
                assert path == tree.inclusion_proof(index, tree_size)
                merkle.verify_inclusion(index, tree_size, tree.perfect(0, index), path, tree.root(tree_size))
            proof = await services.consistency_proof(session, tree_size, size)
            merkle.verify_consistency(tree_size, size, tree.root(tree_size), tree.root(), proof)

    run(database_url, check)


def test_group_commit_appends_many_under_one_lock(database_url: str, engine: Engine) -> None:
    async def work(session: AsyncSession) -> list[int]:
        indices = await services.record_many(session, [event(i) for i in range(50)])
        await session.commit()
        return indices

    assert run(database_url, work) == list(range(50))
    assert merkle.root_of(_leaf_hashes(engine)) == run(database_url, lambda s: services.root_at(s, 50))


def test_concurrent_writers_get_gap_free_indices(database_url: str, engine: Engine) -> None:
    writers, per_writer = 16, 10

    async def main() -> None:
        database = Database(database_url, pool_size=writers)

        async def writer(w: int) -> None:
            for i in range(per_writer):
                async with database.session() as session:
                    await services.record(session, event(w * 100 + i))
                    if i % 3 == 2:
                        await session.rollback()  # a change that fails leaves no leaf
                    else:
                        await session.commit()

        try:
            await asyncio.gather(*(writer(w) for w in range(writers)))
        finally:
            await database.dispose()

    asyncio.run(main())
    committed = writers * sum(1 for i in range(per_writer) if i % 3 != 2)
    with engine.connect() as conn:
        indices = [row[0] for row in conn.execute(text("SELECT leaf_index FROM ledger_entry ORDER BY leaf_index"))]
        payloads = [json.loads(row[0])["payload"]["n"] for row in conn.execute(text("SELECT leaf_input FROM ledger_entry"))]
    assert indices == list(range(committed))
    assert len(set(payloads)) == committed
    assert all(n % 100 % 3 != 2 for n in payloads)
    tree = merkle.MemoryTree(_leaf_hashes(engine))
    assert run(database_url, services.head) == (committed, tree.root())


@pytest.fixture
def signer(settings: Settings) -> LedgerSigner:
    return load_ledger_signer(settings)


def test_checkpoint_is_a_signed_note_of_the_head(database_url: str, signer: LedgerSigner) -> None:
    _record(database_url, 5)
    checkpoint = run(database_url, lambda s: services.sign_checkpoint(s, signer))
    opened = open_checkpoint(checkpoint.note, parse_vkey(signer.vkey), origin=signer.origin)
    assert opened.size == 5
    assert opened.root == run(database_url, lambda s: services.root_at(s, 5))
    again = run(database_url, lambda s: services.sign_checkpoint(s, signer))
    assert again.id == checkpoint.id, "no new checkpoint while the log has not grown"


def test_changed_or_foreign_signatures_are_rejected(database_url: str, signer: LedgerSigner) -> None:
    _record(database_url, 3)
    note = run(database_url, lambda s: services.sign_checkpoint(s, signer)).note
    verifier = parse_vkey(signer.vkey)
    for position in range(len(note.encode()) - 1):
        changed = bytearray(note.encode())
        changed[position] ^= 0x01
        try:
            text_note = changed.decode()
        except UnicodeDecodeError:
            continue
        with pytest.raises(NoteError):
            open_checkpoint(text_note, verifier, origin=signer.origin)
    impostor = LedgerSigner(origin=signer.origin, private_key=Ed25519PrivateKey.generate())
    forged = impostor.sign(open_checkpoint(note, verifier))
    with pytest.raises(NoteError):
        open_checkpoint(forged, verifier)


TAMPERING = {
    "update": "UPDATE ledger_entry SET leaf_input = replace(leaf_input, :old, :new) WHERE leaf_index = 3",
    "update-with-hash": None,  # content and its leaf hash both rewritten: only the root can tell
    "delete": "DELETE FROM ledger_entry WHERE leaf_index = 2",
    "reorder": None,
    "insert": None,
    "insert-in-the-middle": None,  # a forged event at 3, the rest moved up one, the head grown to match
    "node": "UPDATE ledger_node SET hash = leaf_hash FROM ledger_entry WHERE ledger_node.level = 1 AND ledger_node.position = 0 AND ledger_entry.leaf_index = 5",
}


def _tamper(engine: Engine, how: str) -> None:
    with engine.begin() as conn:
        if how == "update-with-hash":
            leaf_input = conn.execute(text("SELECT leaf_input FROM ledger_entry WHERE leaf_index = 4")).scalar_one()
            forged = leaf_input.replace('"n":4', '"n":40')
            conn.execute(
                text("UPDATE ledger_entry SET leaf_input = :i, leaf_hash = :h WHERE leaf_index = 4"),
                {"i": forged, "h": merkle.leaf_hash(forged.encode())},
            )
        elif how == "reorder":
            rows = dict(conn.execute(text("SELECT leaf_index, leaf_input FROM ledger_entry WHERE leaf_index IN (1, 6)")).all())
            for index, other in ((1, 6), (6, 1)):
                conn.execute(
                    text("UPDATE ledger_entry SET leaf_input = :i, leaf_hash = :h WHERE leaf_index = :x"),
                    {"i": rows[other], "h": merkle.leaf_hash(rows[other].encode()), "x": index},
                )
        elif how == "insert":
            row = conn.execute(text("SELECT event_type, occurred_at, leaf_input FROM ledger_entry WHERE leaf_index = 0")).one()
            forged = row[2].replace('"index":0', '"index":8')
            conn.execute(
                text(
                    "INSERT INTO ledger_entry (leaf_index, event_type, occurred_at, leaf_input, leaf_hash) VALUES (8, :t, :o, :i, :h)"
                ),
                {"t": row[0], "o": row[1], "i": forged, "h": merkle.leaf_hash(forged.encode())},
            )
        elif how == "insert-in-the-middle":
            row = conn.execute(text("SELECT event_type, occurred_at, leaf_input FROM ledger_entry WHERE leaf_index = 3")).one()
            conn.execute(text("UPDATE ledger_entry SET leaf_index = leaf_index + 1000 WHERE leaf_index >= 3"))
            conn.execute(text("UPDATE ledger_entry SET leaf_index = leaf_index - 999 WHERE leaf_index >= 1000"))
            forged = row[2].replace('"n":3', '"n":33')
            conn.execute(
                text(
                    "INSERT INTO ledger_entry (leaf_index, event_type, occurred_at, leaf_input, leaf_hash) VALUES (3, :t, :o, :i, :h)"
                ),
                {"t": row[0], "o": row[1], "i": forged, "h": merkle.leaf_hash(forged.encode())},
            )
            conn.execute(text("UPDATE ledger_head SET size = size + 1 WHERE id = 1"))
        elif how == "node" and str(engine.url).startswith("sqlite"):
            conn.execute(text("UPDATE ledger_node SET hash = zeroblob(32) WHERE level = 1 AND position = 0"))
        else:
            conn.execute(text(TAMPERING[how]), {"old": '"n":3', "new": '"n":4'} if how == "update" else {})


@pytest.mark.parametrize("how", list(TAMPERING))
def test_self_check_detects_changes_made_in_sql(database_url: str, engine: Engine, signer: LedgerSigner, how: str) -> None:
    _record(database_url, 8)
    run(database_url, lambda s: services.sign_checkpoint(s, signer))
    assert run(database_url, lambda s: services.self_check(s, signer)).ok
    _tamper(engine, how)
    result = run(database_url, lambda s: services.self_check(s, signer))
    assert not result.ok, how
    assert result.problems
    assert run(database_url, lambda s: services.count_alerts(s, "ledger.self_check_failed")) == 1


def _export(database_url: str, signer: LedgerSigner, path: Path) -> None:
    async def main() -> None:
        database = Database(database_url, pool_size=2)
        try:
            with path.open("wb") as out:
                async for chunk in export_lines(database.session, signer):
                    out.write(chunk)
        finally:
            await database.dispose()

    asyncio.run(main())


def _verify_offline(export: Path, trusted: Path) -> subprocess.CompletedProcess[str]:
    """The verifier as an auditor runs it: its own process, the export and a checkpoint kept from earlier."""
    command = [sys.executable, "-m", "supervision.verify", str(export), "--trusted-checkpoint", str(trusted), "--quiet"]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)


# Event rows only: subtree hashes are derived data the export does not carry (the self-check covers
# them), and a row added after the last entry is not part of the log the head describes.
EVENT_ROW_TAMPERING = [how for how in TAMPERING if how not in {"node", "insert"}]


@pytest.mark.parametrize("how", EVENT_ROW_TAMPERING)
def test_offline_verifier_detects_changes_made_in_sql(
    database_url: str, engine: Engine, signer: LedgerSigner, how: str, tmp_path: Path
) -> None:
    _record(database_url, 8)
    trusted = tmp_path / "checkpoint.txt"
    trusted.write_text(run(database_url, lambda s: services.sign_checkpoint(s, signer)).note, encoding="utf-8")
    _export(database_url, signer, tmp_path / "before.jsonl")
    before = _verify_offline(tmp_path / "before.jsonl", trusted)
    assert before.returncode == 0, before.stderr
    _tamper(engine, how)
    _export(database_url, signer, tmp_path / "after.jsonl")
    after = _verify_offline(tmp_path / "after.jsonl", trusted)
    assert after.returncode == 1, (how, after.stdout, after.stderr)
    assert re.search(r"verification FAILED: (entry|checkpoint) \d+", after.stderr), after.stderr


def test_signing_key_is_created_once_and_kept(settings: Settings, tmp_path: Path) -> None:
    fresh = settings.model_copy(update={"var_dir": tmp_path})
    first, second = load_ledger_signer(fresh), load_ledger_signer(fresh)
    assert first.vkey == second.vkey
    assert first.vkey.startswith(fresh.checkpoint_origin + "+")
    assert oct((tmp_path / "keys" / "ledger-signing-key.pem").stat().st_mode & 0o777) == "0o600"
