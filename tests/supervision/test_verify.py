"""The offline verifier (``python -m supervision.verify``) on exports built here: a good one passes,
and every kind of tampering fails, naming the first bad entry or checkpoint."""

from __future__ import annotations

import base64
import io
import json
import subprocess
import sys
import tempfile
import threading
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from supervision import verify
from supervision.merkle import EMPTY_ROOT, MemoryTree
from supervision.note import Checkpoint, sign_note
from supervision.signing import LedgerSigner
from supervision.verify import Report, verify_export

ORIGIN = "market.test/ledger"
ROOT = Path(__file__).resolve().parents[2]


def leaf_input(index: int, **payload: Any) -> bytes:
    """An event as the platform hashes it: RFC 8785 canonical JSON (sorted keys, no spaces) with its index."""
    document = {
        "index": index,
        "type": "test.happened",
        "time": "2026-01-02T03:04:05.000000Z",
        "actor": {"kind": "system", "id": "tests"},
        "orgs": [str(uuid.UUID(int=index + 1))],
        "subjects": {"thing": f"t{index}"},
        "payload": {"n": index, **payload},
    }
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def json_line(document: dict[str, Any]) -> bytes:
    return json.dumps(document, separators=(",", ":")).encode() + b"\n"


def entry_line(index: int, leaf: bytes) -> bytes:
    return json_line({"index": index, "leaf_input": base64.b64encode(leaf).decode()})


def new_signer(origin: str = ORIGIN) -> LedgerSigner:
    return LedgerSigner(origin, Ed25519PrivateKey.generate())


@dataclass
class Export:
    """An export under construction: the events, the checkpoint sizes, and who signs."""

    leaves: list[bytes]
    sizes: list[int]
    signer: LedgerSigner = field(default_factory=new_signer)

    def __post_init__(self) -> None:
        self.tree = MemoryTree()
        for leaf in self.leaves:
            self.tree.append(leaf)

    def note(self, size: int, signer: LedgerSigner | None = None) -> str:
        return (signer or self.signer).sign(Checkpoint(ORIGIN, size, self.tree.root(size)))

    def header(self, **changes: Any) -> bytes:
        header = {"format": "market-ledger-export/1", "origin": ORIGIN, "vkey": self.signer.vkey}
        header |= {"size": len(self.leaves), "checkpoints": len(self.sizes)} | changes
        return json_line(header)

    def lines(self) -> list[bytes]:
        """Header, entry lines, checkpoint lines: each ends in a newline."""
        return [
            self.header(),
            *(entry_line(index, leaf) for index, leaf in enumerate(self.leaves)),
            *(json_line({"checkpoint": self.note(size)}) for size in self.sizes),
        ]


def make(count: int = 20, sizes: tuple[int, ...] = (5, 12, 20), signer: LedgerSigner | None = None) -> Export:
    return Export([leaf_input(index) for index in range(count)], list(sizes), signer or new_signer())


def write(path: Path, lines: list[bytes]) -> Path:
    path.write_bytes(b"".join(lines))
    return path


def check(tmp_path: Path, lines: list[bytes], **options: Any) -> Report:
    return verify_export(write(tmp_path / "export.jsonl", lines), **options)


def failure(tmp_path: Path, lines: list[bytes], **options: Any) -> str:
    report = check(tmp_path, lines, **options)
    assert not report.ok, "the change went unnoticed"
    assert report.problem is not None
    return report.problem


def cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "supervision.verify", *map(str, args)], capture_output=True, text=True, cwd=ROOT, check=False
    )


# --- a good export ---------------------------------------------------------------------------


def test_a_good_export_verifies(tmp_path: Path) -> None:
    export = make()
    seen: list[tuple[str, int, int]] = []
    report = check(tmp_path, export.lines(), progress=lambda what, done, total: seen.append((what, done, total)))
    assert report.ok, report.problem
    assert (report.size, report.entries_checked, report.checkpoints) == (20, 20, 3)
    assert report.root == export.tree.root()
    assert report.latest == Checkpoint(ORIGIN, 20, export.tree.root())
    assert report.uncovered == 0
    assert report.summary().startswith(
        f"verified 20 entries, 3 checkpoints, latest root {base64.b64encode(export.tree.root()).decode()} (size 20"
    )
    assert seen[-1] == ("checkpoints", 3, 3)
    assert ("entries", 20, 20) in seen


def test_the_command_line_exits_0_and_prints_a_summary(tmp_path: Path) -> None:
    export = make()
    path = write(tmp_path / "export.jsonl", export.lines())
    result = cli(path, "--key", export.signer.vkey)
    assert result.returncode == 0, result.stderr
    root = base64.b64encode(export.tree.root()).decode()
    assert result.stdout.startswith(f"verified 20 entries, 3 checkpoints, latest root {root}")
    assert result.stderr == "", "no progress display when stderr is not a terminal"


def test_the_command_line_exits_1_naming_the_problem(tmp_path: Path) -> None:
    export = make()
    lines = export.lines()
    lines[8], lines[9] = lines[9], lines[8]
    result = cli(write(tmp_path / "export.jsonl", lines))
    assert result.returncode == 1
    assert "entry 7 (line 9): the line holds index 8" in result.stderr
    assert result.stdout == ""


def test_usage_errors_and_unreadable_files_exit_2(tmp_path: Path) -> None:
    path = write(tmp_path / "export.jsonl", make().lines())
    assert cli(tmp_path / "missing.jsonl").returncode == 2
    assert cli(tmp_path).returncode == 2, "a directory"
    assert cli(path, "--key", "not a key").returncode == 2
    assert cli(path, "--trusted-checkpoint", tmp_path / "missing.note").returncode == 2
    assert cli().returncode == 2
    assert cli(path, "--jobs", "0").returncode == 2


def test_running_it_imports_no_database_or_web_framework(tmp_path: Path) -> None:
    path = write(tmp_path / "export.jsonl", make().lines())
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "supervision.verify", "--quiet", str(path)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    imported = {line.rsplit("|", 1)[-1].strip().split(".")[0] for line in result.stderr.splitlines() if "|" in line}
    assert "cryptography" in imported
    assert not imported & {"sqlalchemy", "sqlmodel", "litestar", "pydantic", "marketplace", "licensing", "billing"}


def test_an_empty_log_verifies(tmp_path: Path) -> None:
    report = check(tmp_path, make(0, (0,)).lines())
    assert report.ok, report.problem
    assert report.root == EMPTY_ROOT
    assert report.latest == Checkpoint(ORIGIN, 0, EMPTY_ROOT)


def test_entries_after_the_latest_checkpoint_are_reported_as_unsigned(tmp_path: Path) -> None:
    report = check(tmp_path, make(20, (5, 12)).lines())
    assert report.ok, report.problem
    assert report.uncovered == 8
    assert "8 entries after the latest checkpoint are not covered by a signature" in report.summary()
    assert check(tmp_path, make(3, ()).lines()).summary().startswith("verified 3 entries, 0 checkpoints, no signed root")


def test_checkpoints_at_every_kind_of_size_match_the_reference_tree(tmp_path: Path) -> None:
    block = verify.BLOCK
    count = 3 * block + 5
    sizes = sorted({0, 1, 2, 3, block - 1, block, block, block + 1, 2 * block, 2 * block + 3, count - 1, count})
    report = check(tmp_path, make(count, tuple(sizes)).lines())
    assert report.ok, report.problem
    assert report.checkpoints == len(sizes)


def test_an_export_written_with_spaces_or_another_key_order_still_verifies(tmp_path: Path) -> None:
    """The fast path takes the platform's layout; any other JSON layout goes through json and passes."""
    export = make()
    spaced = [json.dumps(json.loads(line)).encode() + b"\n" for line in export.lines()]
    assert check(tmp_path, spaced).ok
    first_key = Export([json.dumps({"index": i, "n": i}).encode() for i in range(9)], [9], export.signer)
    assert check(tmp_path, first_key.lines()).ok


# --- entries ---------------------------------------------------------------------------------


def test_any_change_to_one_byte_of_a_leaf_input_is_named(tmp_path: Path) -> None:
    export = make()
    lines = export.lines()
    line = lines[8]  # entry 7, which checkpoint 1 (size 12) covers
    start = line.index(b'"leaf_input":"') + len(b'"leaf_input":"')
    for position in range(start, len(line) - 3):
        for replacement in {b"A", b"z", b"+", b"="} - {line[position : position + 1]}:
            changed = [*lines]
            changed[8] = line[:position] + replacement + line[position + 1 :]
            problem = failure(tmp_path, changed)
            assert problem.startswith(("entry 7", "checkpoint 1 (size 12): root does not match")), problem


def test_an_edited_event_that_stays_valid_json_breaks_the_signed_root(tmp_path: Path) -> None:
    export = make()
    lines = export.lines()
    lines[8] = entry_line(7, leaf_input(7, extra="edited"))
    assert failure(tmp_path, lines) == (
        "checkpoint 1 (size 12): root does not match the entries (an entry in 5..11 differs from what was signed)"
    )


def test_a_deleted_entry_is_named(tmp_path: Path) -> None:
    lines = make().lines()
    del lines[8]
    assert failure(tmp_path, lines).startswith("entry 7 (line 9): the line holds index 8")


def test_a_deleted_entry_with_the_rest_renumbered_is_named(tmp_path: Path) -> None:
    export = make()
    leaves = export.leaves[:7] + export.leaves[8:]
    lines = [export.header(size=19), *(entry_line(i, leaf) for i, leaf in enumerate(leaves)), *export.lines()[21:]]
    assert failure(tmp_path, lines) == "entry 7: leaf_input names index 8"


def test_swapped_entries_are_named(tmp_path: Path) -> None:
    export = make()
    lines = export.lines()
    lines[8], lines[9] = entry_line(7, export.leaves[8]), entry_line(8, export.leaves[7])
    assert failure(tmp_path, lines) == "entry 7: leaf_input names index 8"


def test_an_inserted_entry_is_named(tmp_path: Path) -> None:
    export = make()
    lines = export.lines()
    assert failure(tmp_path, [*lines[:9], lines[8], *lines[9:]]).startswith("entry 8 (line 10): the line holds index 7")
    # A forged event slipped in as entry 7, every later event rewritten to its new index: the signed roots break.
    forged = [*export.leaves[:7], leaf_input(7, forged=True), *(leaf_input(i + 1) for i in range(7, 20))]
    rewritten = [export.header(size=21), *(entry_line(i, leaf) for i, leaf in enumerate(forged)), *lines[21:]]
    assert failure(tmp_path, rewritten).startswith("checkpoint 1 (size 12): root does not match the entries")


def test_non_canonical_base64_is_named(tmp_path: Path) -> None:
    leaves = [leaf_input(i, pad="x" * (i % 3)) for i in range(6)]
    export = Export(leaves, [6])
    lines = export.lines()
    index = next(i for i, leaf in enumerate(leaves) if base64.b64encode(leaf).endswith(b"="))
    encoded = base64.b64encode(leaves[index]).decode()
    data = encoded.rstrip("=")
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    spare = alphabet[alphabet.index(data[-1]) + 1]  # same decoded bytes, a spare bit set
    variants = [
        data[:-1] + spare + encoded[len(data) :],  # the same bytes, with a spare bit set
        data,  # padding left out
        encoded + "==",
        encoded[:4] + "\n" + encoded[4:],
        encoded[:4] + "*" + encoded[5:],
        encoded[:4] + "-" + encoded[5:],  # the URL-safe alphabet
        "=" + encoded[1:],
    ]
    for variant in variants:
        changed = [*lines]
        changed[1 + index] = json_line({"index": index, "leaf_input": variant})
        assert failure(tmp_path, changed) == f"entry {index}: leaf_input is not canonical base64", variant


def test_leaf_inputs_that_are_not_the_entry_they_claim_to_be_are_named(tmp_path: Path) -> None:
    export = make(3, (3,))
    lines = export.lines()
    cases = {
        b"not json": "entry 1: leaf_input does not decode to UTF-8 JSON",
        b"\xff\xfe": "entry 1: leaf_input does not decode to UTF-8 JSON",
        b"[1]": "entry 1: leaf_input is not a JSON object",
        b'{"n":1}': "entry 1: leaf_input has no index",
        b'{"index":true}': "entry 1: leaf_input names index true",
        b'{"a":{"index":1},"index":2}': "entry 1: leaf_input names index 2",
        b"[" * 100_000: "entry 1: leaf_input does not decode to UTF-8 JSON",
    }
    for leaf, expected in cases.items():
        changed = [*lines]
        changed[2] = entry_line(1, leaf)
        assert failure(tmp_path, changed) == expected


def test_a_garbage_line_is_named(tmp_path: Path) -> None:
    lines = make().lines()
    assert failure(tmp_path, [*lines[:8], b"garbage\n", *lines[9:]]) == "entry 7 (line 9): not a JSON line"
    assert failure(tmp_path, [*lines[:8], b'{"index":7}\n', *lines[9:]]).startswith("entry 7 (line 9): not an entry line")
    assert failure(tmp_path, [*lines[:8], b"\n", *lines[9:]]) == "entry 7 (line 9): not a JSON line"
    assert failure(tmp_path, [*lines[:22], b"garbage\n", *lines[23:]]) == "checkpoint 1 (line 23): not a JSON line"
    assert (
        failure(tmp_path, [*lines, b"garbage\n"]) == "line 25: unexpected data after the last checkpoint (the header announces 3)"
    )
    assert failure(tmp_path, [*lines, b"x"]).startswith("line 25: unexpected data after the last checkpoint")
    # An entry line after the checkpoints hides them from the first look at the end of the file.
    assert failure(tmp_path, [*lines, lines[5]]) == "line 25: unexpected data after the last checkpoint (the header announces 3)"


def test_a_truncated_file_is_named(tmp_path: Path) -> None:
    data = b"".join(make().lines())
    lines = data.splitlines(keepends=True)
    entry_9 = sum(map(len, lines[:10]))
    checkpoint_2 = sum(map(len, lines[:23]))
    assert failure(tmp_path, [data[: entry_9 + 30]]) == "entry 9 (line 11): truncated: the file ends inside it"
    assert failure(tmp_path, [data[:entry_9]]) == "entry 9: missing: the file ends after 9 entries, the header announces 20"
    assert failure(tmp_path, [data[: checkpoint_2 + 30]]) == "checkpoint 2 (line 24): truncated: the file ends inside it"
    assert failure(tmp_path, [data[:checkpoint_2]]) == (
        "checkpoint 2: missing: the file ends after 2 checkpoints, the header announces 3"
    )
    assert failure(tmp_path, [data[:-1]]) == "checkpoint 2 (line 24): truncated: the file ends inside it"
    assert failure(tmp_path, [data[:10]]) == "header (line 1): the file is empty or has no complete line"
    assert failure(tmp_path, []) == "header (line 1): the file is empty or has no complete line"


def test_entries_beyond_or_short_of_the_header_are_named(tmp_path: Path) -> None:
    export = make()
    lines = export.lines()
    assert failure(tmp_path, [export.header(size=21), *lines[1:]]) == (
        "entry 20 (line 22): missing: a checkpoint line comes instead"
    )
    assert failure(tmp_path, [export.header(size=19), *lines[1:]]).startswith(
        "checkpoint 0 (line 21): an entry line comes instead: the export holds more entries than its header announces"
    )
    assert failure(tmp_path, [export.header(checkpoints=2), *lines[1:]]).startswith("line 24: unexpected data after")
    assert failure(tmp_path, [export.header(checkpoints=4), *lines[1:]]).startswith("checkpoint 3: missing")


def test_a_malformed_header_is_named(tmp_path: Path) -> None:
    export = make()
    lines = export.lines()
    cases = {
        export.header(
            format="market-ledger-export/2"
        ): 'header: format is "market-ledger-export/2", not "market-ledger-export/1"',
        export.header(extra=1): "header: missing or unexpected fields: extra",
        export.header(size=-1): "header: size is not a whole number",
        export.header(checkpoints="3"): "header: checkpoints is not a whole number",
        export.header(origin=""): "header: origin is not a one-line string",
        export.header(vkey="nonsense"): "header: vkey is malformed (a verifier key has three '+'-separated parts)",
        b"[]\n": "header (line 1): not a JSON object",
        b"{\n": "header (line 1): not a JSON line",
    }
    for header, expected in cases.items():
        assert failure(tmp_path, [header, *lines[1:]]) == expected


# --- checkpoints -----------------------------------------------------------------------------


def test_an_edited_checkpoint_note_is_named(tmp_path: Path) -> None:
    export = make()
    lines = export.lines()
    note = export.note(12)
    body_end = note.index("\n\n")
    for position in range(body_end):
        edited = note[:position] + ("x" if note[position] != "x" else "y") + note[position + 1 :]
        changed = [*lines]
        changed[22] = json_line({"checkpoint": edited})
        assert failure(tmp_path, changed).startswith("checkpoint 1: signature does not verify"), position
    edited = note[: body_end + 10] + ("A" if note[body_end + 10] != "A" else "B") + note[body_end + 11 :]
    assert failure(tmp_path, [*lines[:22], json_line({"checkpoint": edited}), *lines[23:]]).startswith(
        "checkpoint 1: signature does not verify"
    )


def test_a_checkpoint_signed_by_another_key_is_named(tmp_path: Path) -> None:
    export = make()
    lines = export.lines()
    lines[23] = json_line({"checkpoint": export.note(20, new_signer())})
    assert failure(tmp_path, lines) == f"checkpoint 2: signature does not verify (note carries no signature by {ORIGIN})"


def test_a_checkpoint_whose_size_decreased_is_named(tmp_path: Path) -> None:
    export = make(sizes=(5, 20, 12))
    assert failure(tmp_path, export.lines()) == (
        "checkpoint 2 (size 12): smaller than checkpoint 1 (size 20): checkpoints must not shrink"
    )


def test_checkpoints_of_another_origin_or_beyond_the_log_are_named(tmp_path: Path) -> None:
    export = make()
    lines = export.lines()
    other_origin = sign_note(Checkpoint("elsewhere", 12, export.tree.root(12)).body(), ORIGIN, export.signer.private_key)
    assert failure(tmp_path, [*lines[:22], json_line({"checkpoint": other_origin}), *lines[23:]]) == (
        f"checkpoint 1 (size 12): origin 'elsewhere' is not the export's {ORIGIN!r}"
    )
    longer = make(25, (5, 12, 25), export.signer)
    assert failure(tmp_path, [*lines[:23], json_line({"checkpoint": longer.note(25)})]) == (
        "checkpoint 2 (size 25): larger than the export, which holds 20 entries"
    )


def test_a_fork_signed_at_the_same_size_is_named(tmp_path: Path) -> None:
    export = make()
    fork = Export([*export.leaves[:12], leaf_input(12, fork=True), *export.leaves[13:]], [20], export.signer)
    lines = [export.header(checkpoints=4), *export.lines()[1:], json_line({"checkpoint": fork.note(20)})]
    assert failure(tmp_path, lines) == (
        "checkpoint 3 (size 20): root does not match the entries (checkpoint 2 signed another root at the same size)"
    )


def test_the_header_key_must_be_the_key_given(tmp_path: Path) -> None:
    export = make()
    impostor = new_signer()
    forged = Export(export.leaves, export.sizes, impostor)
    lines = forged.lines()  # everything re-signed by another key, which the header names
    assert check(tmp_path, lines).ok, "self-consistent, but not authenticated"
    assert "the key is the export's own" in check(tmp_path, lines).summary()
    assert failure(tmp_path, lines, key=export.signer.vkey) == "header: vkey is not the key given with --key"
    swapped = [forged.header(), *export.lines()[1:]]  # the header names another key than the signer's
    assert failure(tmp_path, swapped).startswith("checkpoint 0: signature does not verify")
    assert check(tmp_path, export.lines(), key=export.signer.vkey).ok
    with pytest.raises(verify.UsageError):
        check(tmp_path, export.lines(), key="nonsense")


# --- a trusted checkpoint --------------------------------------------------------------------


def test_a_trusted_checkpoint_from_earlier_in_the_same_log_passes(tmp_path: Path) -> None:
    export = make()
    report = check(tmp_path, export.lines(), trusted_note=export.note(8))
    assert report.ok, report.problem
    assert report.trusted == Checkpoint(ORIGIN, 8, export.tree.root(8))
    assert "matches the trusted checkpoint at size 8" in report.summary()
    assert check(tmp_path, export.lines(), trusted_note=export.note(20)).ok
    assert check(tmp_path, export.lines(), trusted_note=export.note(0)).ok


def test_a_trusted_checkpoint_from_a_longer_log_fails(tmp_path: Path) -> None:
    export = make()
    longer = make(30, (30,), export.signer)
    assert failure(tmp_path, export.lines(), trusted_note=longer.note(30)) == (
        "trusted checkpoint (size 30): the export holds only 20 entries (the log shrank, or the export is cut short)"
    )


def test_a_trusted_checkpoint_from_rewritten_history_fails(tmp_path: Path) -> None:
    export = make()
    rewritten = Export([*export.leaves[:3], leaf_input(3, rewritten=True), *export.leaves[4:]], export.sizes, export.signer)
    assert check(tmp_path, rewritten.lines()).ok, "the rewritten log is self-consistent"
    assert failure(tmp_path, rewritten.lines(), trusted_note=export.note(10)) == (
        "trusted checkpoint (size 10): root does not match the entries (the log was rewritten)"
    )


def test_a_trusted_checkpoint_by_another_key_or_origin_fails(tmp_path: Path) -> None:
    export = make()
    assert failure(tmp_path, export.lines(), trusted_note=export.note(10, new_signer())).startswith(
        "trusted checkpoint: signature does not verify"
    )
    other = sign_note(Checkpoint("elsewhere", 10, export.tree.root(10)).body(), ORIGIN, export.signer.private_key)
    assert failure(tmp_path, export.lines(), trusted_note=other).startswith("trusted checkpoint (size 10): origin 'elsewhere'")
    assert failure(tmp_path, export.lines(), trusted_note=export.note(10)[:-1] + "x\n").startswith(
        "trusted checkpoint: signature does not verify"
    )


def test_the_command_line_takes_a_trusted_checkpoint_file(tmp_path: Path) -> None:
    export = make()
    path = write(tmp_path / "export.jsonl", export.lines())
    good, bad = tmp_path / "good.note", tmp_path / "bad.note"
    good.write_text(export.note(12).rstrip("\n"))  # a trailing newline lost in copying does not matter
    bad.write_text(Export([leaf_input(0, other=True)] * 12, [12], export.signer).note(12))
    assert cli(path, "--trusted-checkpoint", good, "--quiet").returncode == 0
    result = cli(path, "--trusted-checkpoint", bad)
    assert result.returncode == 1
    assert "trusted checkpoint (size 12): root does not match the entries" in result.stderr


# --- any single byte -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_export() -> bytes:
    return b"".join(make(12, (3, 7, 12)).lines())


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_changing_any_single_byte_is_detected(small_export: bytes, data: st.DataObject) -> None:
    position = data.draw(st.integers(0, len(small_export) - 1), label="position")
    value = data.draw(st.integers(0, 255).filter(lambda v: v != small_export[position]), label="value")
    changed = small_export[:position] + bytes([value]) + small_export[position + 1 :]
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "export.jsonl"
        path.write_bytes(changed)
        report = verify_export(path)
    assert not report.ok, f"byte {position} changed to {value} went unnoticed"


# --- the parallel path -----------------------------------------------------------------------


@pytest.fixture
def tiny_parallel(monkeypatch: pytest.MonkeyPatch) -> None:
    """Parallel checking even for tiny exports, in tiny tasks and blocks, so every edge case is hit."""
    assert verify._can_fork(), "Linux always has forkserver"
    monkeypatch.setattr(verify, "PARALLEL_MIN_ENTRIES", 0)
    monkeypatch.setattr(verify, "TASK_BYTES", 1500)
    monkeypatch.setattr(verify, "BLOCK", 4)


@pytest.mark.usefixtures("tiny_parallel")
def test_the_parallel_path_gives_the_same_roots(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    serial_runs: list[int] = []
    serial = verify._entries
    monkeypatch.setattr(verify, "_entries", lambda *args: serial_runs.append(1) or serial(*args))
    for count in (1, 3, 4, 5, 17, 40):
        sizes = sorted({0, 1, count // 3, count // 2, count - 1, count})
        export = make(count, tuple(sizes))
        report = check(tmp_path, export.lines(), jobs=2, trusted_note=export.note(count // 2))
        assert report.ok, (count, report.problem)
        assert report.root == export.tree.root()
    assert not serial_runs, "the parallel path did it all"


@pytest.mark.usefixtures("tiny_parallel")
def test_the_parallel_path_names_the_same_problems(tmp_path: Path) -> None:
    export = make(40, (10, 25, 40))
    lines = export.lines()
    changes: list[list[bytes]] = [
        [*lines[:8], lines[9], lines[8], *lines[10:]],
        [*lines[:30], *lines[31:]],
        [*lines[:30], entry_line(29, leaf_input(29, edited=True)), *lines[31:]],
        [*lines[:20], b"garbage\n", *lines[21:]],
        [*lines[:-1], json_line({"checkpoint": export.note(40, new_signer())})],
        [*lines, lines[5]],
        [*lines[:-1], lines[-1][:-5]],
    ]
    for changed in changes:
        serial = check(tmp_path, changed)
        parallel = check(tmp_path, changed, jobs=2)
        assert not serial.ok
        assert parallel.problem == serial.problem


# --- progress --------------------------------------------------------------------------------


def test_the_progress_line_updates_in_place_and_is_cleared() -> None:
    stream = io.StringIO()
    line = verify._ProgressLine(stream, interval=0)
    line("entries", 500, 1000)
    line("checkpoints", 1, 4)
    line.clear()
    text = stream.getvalue()
    assert "\r\x1b[Kverifying entries: 500/1,000 (50.0%)" in text
    assert "entries/s" in text
    assert text.endswith("\r\x1b[K")
    quiet = io.StringIO()
    throttled = verify._ProgressLine(quiet, interval=3600)
    for done in range(1, 100):
        throttled("entries", done, 100)
    assert quiet.getvalue().count("\r") == 1, "at most a few updates a second"


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_the_command_line_shows_progress_only_on_a_terminal_and_not_when_quiet(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = str(write(tmp_path / "export.jsonl", make().lines()))
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    assert verify.main([path, "--jobs", "1"]) == 0
    assert "\r\x1b[Kverifying entries: 20/20 (100.0%)" in terminal.getvalue()
    assert terminal.getvalue().endswith("\r\x1b[K"), "the progress line is cleared before the summary"
    assert capsys.readouterr().out.startswith("verified 20 entries")
    quiet = _Terminal()
    monkeypatch.setattr(sys, "stderr", quiet)
    assert verify.main([path, "--quiet"]) == 0
    assert quiet.getvalue() == ""
    assert capsys.readouterr().out.startswith("verified 20 entries")


def test_a_line_too_long_is_refused_without_reading_it_all(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(verify, "MAX_LINE", 1000)
    monkeypatch.setattr(verify, "READ_SIZE", 256)
    lines = make(3, (3,)).lines()
    assert failure(tmp_path, [*lines[:2], b"x" * 5000 + b"\n", *lines[3:]]) == "entry 1 (line 3): longer than 1000 bytes"


def test_a_header_key_not_in_its_canonical_form_is_refused(tmp_path: Path) -> None:
    signer = new_signer()
    while signer.vkey.split("+")[1].isdigit():  # a key hash with a letter in it
        signer = new_signer()
    export = make(signer=signer)
    name, key_hash, encoded = signer.vkey.split("+", 2)
    upper = f"{name}+{key_hash.upper()}+{encoded}"
    assert failure(tmp_path, [export.header(vkey=upper), *export.lines()[1:]]) == (
        "header: vkey is not written in its one canonical form"
    )
    assert check(tmp_path, export.lines(), key=upper).ok, "the key given is compared by meaning"


@pytest.mark.usefixtures("tiny_parallel")
def test_the_parallel_path_uses_a_fork_server_while_other_threads_run(tmp_path: Path) -> None:
    export = make(40, (20, 40))
    release = threading.Event()
    other = threading.Thread(target=release.wait, daemon=True)
    other.start()
    try:
        assert verify._start_method() == "forkserver"
        report = check(tmp_path, export.lines(), jobs=2)
    finally:
        release.set()
        other.join()
    assert report.ok, report.problem
    assert report.root == export.tree.root()
