"""Offline verifier for a ledger export: ``python -m supervision.verify FILE [--trusted-checkpoint NOTE_FILE] [--key VKEY]``.

The export (``GET /api/supervision/ledger/export``) is UTF-8 JSON Lines, each line ending in a newline::

    {"format":"market-ledger-export/1","origin":"<origin>","vkey":"<vkey>","size":N,"checkpoints":K}
    {"index":0,"leaf_input":"<base64 of the exact canonical JSON bytes that were hashed>"}
    ...                                   (N entry lines, in index order)
    {"checkpoint":"<the whole signed note>"}
    ...                                   (K checkpoint lines, oldest first, each of size <= N)

An auditor's export (scoped to its engagement) gives the entries it may not read as
``{"index":I,"leaf_hash":"<base64 of the 32-byte leaf hash>"}`` and adds ``"scope"`` and ``"withheld"``
to the header: those entries count in the tree with the hash given, so the tree and every checkpoint
are still checked; their contents are not.

The verifier streams the file once (plus a look at its last lines, to learn which tree sizes the
checkpoints name), holding O(log N) hashes of the tree and one root per checkpoint: it recomputes
every RFC 9162 leaf hash and the tree, keeps the root at each checkpoint size, and checks every
checkpoint's Ed25519 signature, origin, order and root. Equal roots at every signed size make each
checkpoint consistent with the one before. With a trusted checkpoint (a signed note seen earlier),
the export must hold exactly its tree at its size: a log that was rewritten or shrank fails. The
first problem is named; entries and checkpoints are numbered from 0, in file order.

Entries are checked without parsing JSON when a line has the fixed shape the platform writes,
and the leaf's top-level ``"index"`` is found by a byte scan when the leaf is laid out as its
canonical JSON (RFC 8785: ``"index"`` after ``"actor"``); anything else goes through ``json``.
With ``--jobs`` > 1 (the default on the command line, where ``forkserver`` exists) worker processes
check and hash the entries of a large export; anything unusual sends it back to the serial path,
which is the one that names problems.

Standard library, ``cryptography`` and ``supervision.merkle``/``supervision.note`` only: it runs
without the platform.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import bisect
import ctypes
import functools
import hashlib
import itertools
import json
import multiprocessing
import operator
import os
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from multiprocessing.pool import AsyncResult
from pathlib import Path
from typing import BinaryIO, TextIO

from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from supervision.merkle import EMPTY_ROOT, node_hash, range_hash
from supervision.note import Checkpoint, NoteError, Verifier, open_note, parse_checkpoint, parse_vkey, vkey

FORMAT = "market-ledger-export/1"
HEADER_FIELDS = frozenset({"format", "origin", "vkey", "size", "checkpoints"})
#: Header fields of an auditor's (engagement-scoped) export.
SCOPED_HEADER_FIELDS = frozenset({"scope", "withheld"})

#: Leaves hashed together, level by level; a power of two so blocks are perfect, aligned subtrees.
BLOCK = 1 << 10
READ_SIZE = 1 << 22
MAX_LINE = 1 << 26
TAIL_READ = 1 << 16
TAIL_LIMIT = 1 << 28
#: The parallel path: bytes of entry lines per task, and the fewest entries worth starting processes for.
TASK_BYTES = 1 << 21
PARALLEL_MIN_ENTRIES = 1 << 16

#: progress(what, done, total): ``what`` is "entries" or "checkpoints".
Progress = Callable[[str, int, int], None]

_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


def _bad_tails() -> frozenset[bytes]:
    """Last three characters of a strict base64 string that are not its one canonical encoding.

    ``binascii`` in strict mode checks the alphabet and the padding but not the unused low bits of
    the last character before padding: they must be zero (``x==``: 4 bits, ``xy=``: 2 bits)."""
    bad = set()
    for value, char in enumerate(_ALPHABET):
        if value % 16:
            bad.add(bytes([char]) + b"==")
        if value % 4:
            bad.update(bytes([first, char]) + b"=" for first in _ALPHABET)
    return frozenset(bad)


_BAD_TAILS = _bad_tails()
_A2B_STRICT = functools.partial(binascii.a2b_base64, strict_mode=True)
_A2B = binascii.a2b_base64
_TAIL = operator.itemgetter(slice(-3, None))
_LEAF_HASHER = hashlib.sha256(b"\x00")
_NODE_HASHER = hashlib.sha256(b"\x01")
_INDEX_KEY = b'"index":'


def _json(data: bytes) -> object:
    """Strict UTF-8 JSON; ValueError for anything else (also nesting too deep to parse)."""
    try:
        return json.loads(data.decode("utf-8"))
    except RecursionError:
        raise ValueError("nested too deeply") from None


class UsageError(ValueError):
    """A bad argument (not a problem with the export): exit status 2."""


class _Failure(Exception):
    """The first problem found in the export."""


class _NeedRoots(Exception):
    """Checkpoints name sizes whose roots were not kept (the look at the file's end missed them)."""

    def __init__(self, sizes: set[int]) -> None:
        super().__init__(sorted(sizes))
        self.sizes = sizes


@dataclass(frozen=True)
class Report:
    """What a verification found. ``ok`` is False when ``problem`` names the first bad thing."""

    path: str
    ok: bool
    problem: str | None
    origin: str | None
    size: int
    entries_checked: int
    checkpoints: int
    root: bytes | None
    latest: Checkpoint | None
    trusted: Checkpoint | None
    key_given: bool
    seconds: float

    @property
    def uncovered(self) -> int:
        """Entries after the latest checkpoint: no signature covers them."""
        return self.size - (self.latest.size if self.latest else 0)

    def summary(self) -> str:
        """One line: the result and the latest signed root."""
        if not self.ok:
            return f"{self.path}: verification FAILED: {self.problem}"
        text = f"verified {self.size} entries, {self.checkpoints} checkpoints"
        if self.latest is None:
            text += ", no signed root"
        else:
            text += f", latest root {base64.b64encode(self.latest.root).decode()} (size {self.latest.size}, origin {self.origin})"
        if self.trusted is not None:
            text += f"; matches the trusted checkpoint at size {self.trusted.size}"
        if self.uncovered:
            text += f"; {self.uncovered} entries after the latest checkpoint are not covered by a signature"
        if not self.key_given and self.trusted is None:
            text += "; the key is the export's own (give --key or --trusted-checkpoint to authenticate it)"
        return text + f" [{self.seconds:.1f}s]"


class _State:
    """What has been established so far (for the report, also when verification stops early)."""

    def __init__(self) -> None:
        self.origin: str | None = None
        self.size = 0
        self.entries_checked = 0
        self.checkpoints = 0
        self.root: bytes | None = None
        self.latest: Checkpoint | None = None
        self.trusted: Checkpoint | None = None


class _Lines:
    """Complete lines of a binary file, read in large blocks."""

    def __init__(self, handle: BinaryIO, number: int = 0, offset: int = 0) -> None:
        self._handle = handle
        self._buffer = b""
        self._pos = 0
        self.number = number  # lines handed out so far
        self.offset = offset  # file offset just after them

    def _fill(self, where: str) -> bool:
        """Read more; False at the end of the file."""
        if len(self._buffer) - self._pos > MAX_LINE:
            raise _Failure(f"{where} (line {self.number + 1}): longer than {MAX_LINE} bytes")
        chunk = self._handle.read(READ_SIZE)
        if not chunk:
            return False
        self._buffer = self._buffer[self._pos :] + chunk
        self._pos = 0
        return True

    @property
    def rest(self) -> bytes:
        """Bytes after the last complete line (at the end of the file: a truncated line)."""
        return self._buffer[self._pos :]

    def run(self, limit: int, where: str) -> tuple[bytes, int]:
        """Up to ``limit`` complete lines as one run of bytes ending in a newline, and how many; (b"", 0) at the end."""
        buffer = self._buffer
        end = buffer.rfind(b"\n", self._pos) + 1
        while not end:
            if not self._fill(where):
                return b"", 0
            buffer = self._buffer
            end = buffer.rfind(b"\n", self._pos) + 1
        count = buffer.count(b"\n", self._pos, end)
        if count > limit:
            end, count = self._pos, limit
            for _ in range(limit):
                end = buffer.index(b"\n", end) + 1
        run = buffer[self._pos : end]
        self._pos = end
        self.number += count
        self.offset += len(run)
        return run, count

    def line(self, where: str) -> bytes | None:
        """The next complete line without its newline; None at the end of the file."""
        end = self._buffer.find(b"\n", self._pos)
        while end < 0:
            if not self._fill(where):
                return None
            end = self._buffer.find(b"\n", self._pos)
        line = self._buffer[self._pos : end]
        self._pos = end + 1
        self.number += 1
        self.offset += len(line) + 1
        return line


def _levels(leaves: list[bytes]) -> list[list[bytes]]:
    """Every level of the perfect, aligned subtrees over ``leaves`` (leaves first, then their parents...)."""
    levels = [leaves]
    level = leaves
    copy = _NODE_HASHER.copy
    while len(level) > 1:
        parents: list[bytes] = []
        append = parents.append
        for left, right in zip(level[0::2], level[1::2], strict=False):  # an odd last one waits
            hasher = copy()
            hasher.update(left)
            hasher.update(right)
            append(hasher.digest())
        levels.append(parents)
        level = parents
    return levels


def _prefix_roots(levels: list[list[bytes]], base: int, sizes: Sequence[int]) -> list[tuple[int, bytes]]:
    """For each size in ``sizes`` (sorted) that ends inside the block of leaves ``base..``: MTH of the block's
    leaves up to that size."""
    end = base + len(levels[0])
    wanted = sizes[bisect.bisect_right(sizes, base) : bisect.bisect_right(sizes, end)]
    return [(size, range_hash(0, size - base, lambda height, index: levels[height][index])) for size in wanted]


class _Tree:
    """The RFC 9162 tree over a stream of leaf hashes, keeping only the roots at the wanted sizes.

    Leaves are hashed level by level in aligned blocks of ``BLOCK`` leaves (perfect subtrees); the
    blocks' roots go on a frontier of perfect subtrees, at most one per height: O(log N) hashes.
    """

    def __init__(self, wanted: Iterable[int]) -> None:
        self.wanted = sorted(set(wanted))
        self.roots: dict[int, bytes] = {size: EMPTY_ROOT for size in self.wanted if size == 0}
        self._frontier: list[tuple[int, bytes]] = []  # (height, hash), left to right
        self._pending: list[bytes] = []
        self._base = 0  # leaves in the frontier: a multiple of BLOCK

    @property
    def size(self) -> int:
        """Leaves added so far."""
        return self._base + len(self._pending)

    def extend(self, leaf_hashes: list[bytes]) -> None:
        """Add leaves by their hashes."""
        pending = self._pending
        pending += leaf_hashes
        if len(pending) >= BLOCK:
            full = len(pending) - len(pending) % BLOCK
            for start in range(0, full, BLOCK):
                self._hash_block(pending[start : start + BLOCK])
            del pending[:full]

    def add_block(self, top: bytes, prefix_roots: list[tuple[int, bytes]]) -> None:
        """Add a whole aligned block hashed elsewhere: its root and its :func:`_prefix_roots`."""
        if self._pending:
            raise RuntimeError("a block must start on a block boundary")
        self._place(BLOCK, top, prefix_roots)

    def finish(self) -> bytes:
        """Hash the last, partial block; the root of the whole tree (whose size must be wanted)."""
        if self._pending:
            self._hash_block(self._pending)
            self._pending = []
        return self.roots[self.size]

    def _hash_block(self, leaves: list[bytes]) -> None:
        levels = _levels(leaves)
        self._place(len(leaves), levels[-1][0], _prefix_roots(levels, self._base, self.wanted))

    def _place(self, length: int, top: bytes, prefix_roots: list[tuple[int, bytes]]) -> None:
        for size, prefix_root in prefix_roots:
            right = prefix_root
            for _, value in reversed(self._frontier):
                right = node_hash(value, right)
            self.roots[size] = right
        if length == BLOCK:
            height, value = BLOCK.bit_length() - 1, top
            frontier = self._frontier
            while frontier and frontier[-1][0] == height:
                value = node_hash(frontier.pop()[1], value)
                height += 1
            frontier.append((height, value))
        self._base += length


# --- entries ---------------------------------------------------------------------------------


def _decode_leaf(encoded: object, index: int) -> bytes:
    """The bytes of a leaf_input, which must be canonical base64."""
    if not isinstance(encoded, str):
        raise _Failure(f"entry {index}: leaf_input is not a string")
    try:
        data = encoded.encode("ascii")
        raw = _A2B(data, strict_mode=True)
    except (UnicodeEncodeError, binascii.Error):
        raise _Failure(f"entry {index}: leaf_input is not canonical base64") from None
    if data[-3:] in _BAD_TAILS:
        raise _Failure(f"entry {index}: leaf_input is not canonical base64")
    return raw


def _check_leaf(raw: bytes, index: int) -> None:
    """The leaf must be a JSON object whose top-level "index" is its position."""
    try:
        document = _json(raw)
    except ValueError:
        raise _Failure(f"entry {index}: leaf_input does not decode to UTF-8 JSON") from None
    if not isinstance(document, dict):
        raise _Failure(f"entry {index}: leaf_input is not a JSON object")
    if "index" not in document:
        raise _Failure(f"entry {index}: leaf_input has no index")
    claimed = document["index"]
    if type(claimed) is not int or claimed != index:
        raise _Failure(f"entry {index}: leaf_input names index {json.dumps(claimed)}")


def _entry_leaf(line: bytes, index: int, line_number: int) -> bytes:
    """The checked leaf input of one entry line (slow path: any JSON layout)."""
    where = f"entry {index} (line {line_number})"
    try:
        document = _json(line)
    except ValueError:
        raise _Failure(f"{where}: not a JSON line") from None
    if isinstance(document, dict) and set(document) == {"index", "leaf_input"}:
        claimed = document["index"]
        if type(claimed) is not int or claimed != index:
            raise _Failure(f"{where}: the line holds index {json.dumps(claimed)} (entries must run 0, 1, 2, ... in order)")
        raw = _decode_leaf(document["leaf_input"], index)
        _check_leaf(raw, index)
        return raw
    if isinstance(document, dict) and "checkpoint" in document:
        raise _Failure(f"{where}: missing: a checkpoint line comes instead")
    raise _Failure(f'{where}: not an entry line ({{"index":...,"leaf_input":...}})')


def _fast_run(run: bytes, start: int, count: int) -> list[bytes] | None:
    """Leaf hashes of ``count`` entry lines laid out exactly as the platform writes them, or None
    when anything differs (then the slow path names the problem, or accepts another layout).

    Split on quotes, every line is ``{ index :I, leaf_input : B }\\n``: six parts, of which five are
    fixed, so the whole run is checked with a few list operations, and ``B`` must be canonical base64.
    The leaf's first ``"index":`` key (after ``"actor"`` in canonical JSON) must be ``,"index":I,``;
    a leaf laid out otherwise is parsed with ``json``.
    """
    parts = run.split(b'"')
    if len(parts) != 6 * count + 1 or parts[0] != b"{" or parts[-1] != b"}\n":
        return None
    numbers = parts[2::6]
    encoded = parts[5::6]
    if (
        # No part holds a quote, so equal joins mean equal parts: ":0,", ":1,", ...
        b'"'.join(numbers) != (":" + ',":'.join(map(str, range(start, start + count))) + ",").encode()
        or parts[1::6].count(b"index") != count
        or parts[3::6].count(b"leaf_input") != count
        or parts[4::6].count(b":") != count
        or parts[6:-1:6].count(b"}\n{") != count - 1
        or not _BAD_TAILS.isdisjoint(map(_TAIL, encoded))
    ):
        return None
    # Whole-list operations (map, comprehensions) rather than one loop: each step runs in C.
    try:
        raws = list(map(_A2B_STRICT, encoded))
    except binascii.Error:
        return None
    keys = [at - 1 for at in map(bytes.find, raws, itertools.repeat(_INDEX_KEY))]
    laid_out = list(map(bytes.startswith, raws, [b',"index"' + number for number in numbers], keys))
    if not all(laid_out):
        for offset in itertools.compress(itertools.count(), (not ok for ok in laid_out)):
            _check_leaf(raws[offset], start + offset)
    copy = _LEAF_HASHER.copy

    def leaf_hash(raw: bytes) -> bytes:
        hasher = copy()
        hasher.update(raw)
        return hasher.digest()

    return list(map(leaf_hash, raws))


def _withheld_hash(line: bytes, index: int, line_number: int) -> bytes | None:
    """The leaf hash of an entry withheld from an auditor's export (``{"index","leaf_hash"}``); None for other lines."""
    if b'"leaf_hash"' not in line:
        return None
    where = f"entry {index} (line {line_number})"
    try:
        document = _json(line)
    except ValueError:
        raise _Failure(f"{where}: not a JSON line") from None
    if not isinstance(document, dict) or set(document) != {"index", "leaf_hash"}:
        return None
    claimed = document["index"]
    if type(claimed) is not int or claimed != index:
        raise _Failure(f"{where}: the line holds index {json.dumps(claimed)} (entries must run 0, 1, 2, ... in order)")
    encoded = document["leaf_hash"]
    try:
        value = _A2B(encoded.encode("ascii"), strict_mode=True) if isinstance(encoded, str) else b""
    except (UnicodeEncodeError, binascii.Error):
        value = b""
    if len(value) != hashlib.sha256().digest_size or base64.b64encode(value).decode() != encoded:
        raise _Failure(f"{where}: leaf_hash is not the canonical base64 of a 32-byte hash")
    return value


def _slow_run(run: bytes, start: int, first_line: int) -> list[bytes]:
    """Leaf hashes of a run of entry lines, one line at a time with ``json``; names the first problem."""
    hashes: list[bytes] = []
    for offset, line in enumerate(run.split(b"\n")[:-1]):
        withheld = _withheld_hash(line, start + offset, first_line + offset)
        if withheld is not None:
            hashes.append(withheld)
            continue
        raw = _entry_leaf(line, start + offset, first_line + offset)
        hasher = _LEAF_HASHER.copy()
        hasher.update(raw)
        hashes.append(hasher.digest())
    return hashes


def _entries(lines: _Lines, total: int, wanted: Iterable[int], progress: Progress | None, state: _State) -> dict[int, bytes]:
    """Check the ``total`` entry lines; the roots at the wanted sizes and of the whole log."""
    tree = _Tree([*wanted, total])
    index = 0
    while index < total:
        where = f"entry {index}"
        run, count = lines.run(total - index, where)
        if not count:
            if lines.rest:
                raise _Failure(f"{where} (line {lines.number + 1}): truncated: the file ends inside it")
            raise _Failure(f"{where}: missing: the file ends after {index} entries, the header announces {total}")
        hashes = _fast_run(run, index, count)
        if hashes is None:
            hashes = _slow_run(run, index, lines.number - count + 1)
        tree.extend(hashes)
        index += count
        state.entries_checked = index
        if progress is not None:
            progress("entries", index, total)
    state.root = tree.finish()
    return tree.roots


# --- entries, in parallel ----------------------------------------------------------------------
#
# Worker processes each take a byte range of the entry lines (the lines that start in it), check
# them with the fast path, and hash them, whole aligned blocks included; the parent checks that the
# ranges follow one another and assembles the tree. Anything unusual (a line the fast path does not
# take, a gap) makes the parent start over on the serial path, which names the first problem.

_WANTED: list[int] = []  # the wanted sizes, in worker processes

_Piece = tuple[int, int, bytes, list[tuple[bytes, list[tuple[int, bytes]]]], bytes]


class _Serial(Exception):
    """The parallel path met something it leaves to the serial path."""


def _keep_freed_memory() -> None:
    """Ask glibc to keep freed memory for reuse instead of returning it to the system: a worker frees and
    allocates a task's worth of small objects over and over, and faulting those pages back in cost as
    much system time as the hashing (mallopt M_TRIM_THRESHOLD, M_MMAP_THRESHOLD; elsewhere a no-op)."""
    try:
        libc = ctypes.CDLL(None)
        libc.mallopt(-1, 1 << 30)
        libc.mallopt(-3, 1 << 30)
    except (OSError, AttributeError):
        pass


def _init_worker(wanted: list[int], block: int, tail_read: int) -> None:
    # Workers start from a fresh interpreter: the parent's settings come along explicitly.
    global _WANTED, BLOCK, TAIL_READ
    _WANTED, BLOCK, TAIL_READ = wanted, block, tail_read
    _keep_freed_memory()


def _hash_range(path: str | os.PathLike[str], start: int, end: int, first_start: int) -> _Piece | None:
    """(first index, count, head leaf hashes, whole blocks, tail leaf hashes) of the lines starting in
    ``start..end``; None for anything the fast path does not take."""
    with open(path, "rb") as handle:
        if start > first_start:
            handle.seek(start - 1)
            data = handle.read(end - start + 1)
            data = data[data.find(b"\n") + 1 :] if b"\n" in data else b""
        else:
            handle.seek(start)
            data = handle.read(end - start)
        while data and not data.endswith(b"\n"):
            more = handle.read(TAIL_READ)
            if not more:
                return None
            cut = more.find(b"\n")
            data += more if cut < 0 else more[: cut + 1]
    count = data.count(b"\n")
    if not count:
        return 0, 0, b"", [], b""
    digits = data[9 : data.find(b",", 9)]
    if not data.startswith(b'{"index":') or not (digits.isdigit() and 0 < len(digits) < 19):
        return None
    first = int(digits)
    try:
        hashes = _fast_run(data, first, count)
    except _Failure:
        return None
    if hashes is None:
        return None
    head_end = -(-first // BLOCK) * BLOCK
    tail_start = (first + count) // BLOCK * BLOCK
    if head_end >= tail_start:
        return first, count, b"".join(hashes), [], b""
    blocks = []
    for base in range(head_end, tail_start, BLOCK):
        levels = _levels(hashes[base - first : base - first + BLOCK])
        blocks.append((levels[-1][0], _prefix_roots(levels, base, _WANTED)))
    return first, count, b"".join(hashes[: head_end - first]), blocks, b"".join(hashes[tail_start - first :])


def _split_hashes(joined: bytes) -> list[bytes]:
    return [joined[at : at + 32] for at in range(0, len(joined), 32)]


def _entries_parallel(
    path: str | os.PathLike[str],
    first_start: int,
    entries_end: int,
    total: int,
    wanted: Iterable[int],
    jobs: int,
    progress: Progress | None,
    state: _State,
) -> dict[int, bytes]:
    """As :func:`_entries`, over the entry lines in ``first_start..entries_end``, in ``jobs`` processes."""
    tree = _Tree([*wanted, total])
    bounds = [*range(first_start, entries_end, TASK_BYTES), entries_end]
    tasks = itertools.pairwise(bounds)
    try:
        context = multiprocessing.get_context(_start_method())
        if context.get_start_method() == "forkserver":
            context.set_forkserver_preload([__name__])
        pool = context.Pool(jobs, initializer=_init_worker, initargs=(tree.wanted, BLOCK, TAIL_READ))
    except OSError:  # no processes to be had: do it here
        raise _Serial from None
    with pool:
        running: deque[AsyncResult[_Piece | None]] = deque()
        for start, end in itertools.islice(tasks, 2 * jobs + 1):
            running.append(pool.apply_async(_hash_range, (path, start, end, first_start)))
        index = 0
        while running:
            piece = running.popleft().get()
            for start, end in itertools.islice(tasks, 1):
                running.append(pool.apply_async(_hash_range, (path, start, end, first_start)))
            if piece is None:
                raise _Serial
            first, count, head, blocks, tail = piece
            if not count:
                continue
            if first != index or index + count > total:
                raise _Serial
            tree.extend(_split_hashes(head))
            for top, prefix_roots in blocks:
                tree.add_block(top, prefix_roots)
            tree.extend(_split_hashes(tail))
            index += count
            if progress is not None:
                progress("entries", index, total)
    if index != total:
        raise _Serial
    state.entries_checked = total
    state.root = tree.finish()
    return tree.roots


# --- header, checkpoints ---------------------------------------------------------------------


@dataclass(frozen=True)
class _Header:
    origin: str
    vkey: str
    size: int
    checkpoints: int


def _header(lines: _Lines) -> _Header:
    line = lines.line("header")
    if line is None:
        raise _Failure("header (line 1): the file is empty or has no complete line")
    try:
        header = _json(line)
    except ValueError:
        raise _Failure("header (line 1): not a JSON line") from None
    if not isinstance(header, dict):
        raise _Failure("header (line 1): not a JSON object")
    if header.get("format") != FORMAT:
        raise _Failure(f"header: format is {json.dumps(header.get('format'))}, not {json.dumps(FORMAT)}")
    expected = HEADER_FIELDS | SCOPED_HEADER_FIELDS if set(header) & SCOPED_HEADER_FIELDS else HEADER_FIELDS
    if set(header) != expected:
        fields = ", ".join(sorted(set(header) ^ expected))
        raise _Failure(f"header: missing or unexpected fields: {fields}")
    origin, vkey, size, checkpoints = header["origin"], header["vkey"], header["size"], header["checkpoints"]
    if not isinstance(origin, str) or not origin or "\n" in origin:
        raise _Failure("header: origin is not a one-line string")
    if not isinstance(vkey, str):
        raise _Failure("header: vkey is not a string")
    for name, value in (("size", size), ("checkpoints", checkpoints)):
        if type(value) is not int or value < 0:
            raise _Failure(f"header: {name} is not a whole number")
    return _Header(origin=origin, vkey=vkey, size=size, checkpoints=checkpoints)


def _size_hint(line: bytes) -> int | None:
    """The size a checkpoint line names, unverified; None if the line is not one."""
    try:
        document = _json(line)
    except ValueError:
        return None
    if not isinstance(document, dict) or not isinstance(document.get("checkpoint"), str):
        return None
    note_lines = document["checkpoint"].split("\n", 2)
    if len(note_lines) < 2 or not (note_lines[1].isascii() and note_lines[1].isdigit()) or len(note_lines[1]) > 18:
        return None
    return int(note_lines[1])


def _look_at_end(path: str | os.PathLike[str], start: int) -> tuple[set[int], int | None]:
    """The sizes the checkpoint lines at the end of the file name (which roots to keep while streaming),
    and the offset just after the last entry line (where the parallel path stops).

    Only hints (nothing here is trusted): reads backwards from the end to the first entry line.
    """
    sizes: set[int] = set()
    with open(path, "rb") as handle:
        end = handle.seek(0, os.SEEK_END)
        limit = max(start, end - TAIL_LIMIT)
        carry = b""
        while end > limit:
            step = min(TAIL_READ, end - limit)
            end -= step
            handle.seek(end)
            data = handle.read(step) + carry
            position = end + len(data)  # just after the piece at hand
            pieces = data.split(b"\n")
            carry = pieces.pop(0) if end > start else b""
            for piece in reversed(pieces):
                if piece.startswith(b'{"index"'):
                    return sizes, position + 1
                size = _size_hint(piece)
                if size is not None:
                    sizes.add(size)
                position -= len(piece) + 1
    return sizes, None


def _checkpoint_note(line: bytes, number: int, line_number: int) -> str:
    where = f"checkpoint {number} (line {line_number})"
    try:
        document = _json(line)
    except ValueError:
        raise _Failure(f"{where}: not a JSON line") from None
    if isinstance(document, dict) and set(document) == {"checkpoint"} and isinstance(document["checkpoint"], str):
        return document["checkpoint"]
    if isinstance(document, dict) and "leaf_input" in document:
        raise _Failure(f"{where}: an entry line comes instead: the export holds more entries than its header announces")
    raise _Failure(f'{where}: not a checkpoint line ({{"checkpoint":...}})')


def _open(note: str, verifier: Verifier, label: str) -> Checkpoint:
    try:
        body = open_note(note, verifier)
    except NoteError as exc:
        raise _Failure(f"{label}: signature does not verify ({exc})") from None
    try:
        return parse_checkpoint(body)
    except NoteError as exc:
        raise _Failure(f"{label}: malformed checkpoint ({exc})") from None


def _checkpoints(
    lines: _Lines, header: _Header, verifier: Verifier, roots: dict[int, bytes], progress: Progress | None, state: _State
) -> None:
    previous: Checkpoint | None = None
    for number in range(header.checkpoints):
        line = lines.line(f"checkpoint {number}")
        if line is None:
            if lines.rest:
                raise _Failure(f"checkpoint {number} (line {lines.number + 1}): truncated: the file ends inside it")
            raise _Failure(
                f"checkpoint {number}: missing: the file ends after {number} checkpoints, the header announces {header.checkpoints}"
            )
        checkpoint = _open(_checkpoint_note(line, number, lines.number), verifier, f"checkpoint {number}")
        label = f"checkpoint {number} (size {checkpoint.size})"
        if checkpoint.origin != header.origin:
            raise _Failure(f"{label}: origin {checkpoint.origin!r} is not the export's {header.origin!r}")
        if checkpoint.size > header.size:
            raise _Failure(f"{label}: larger than the export, which holds {header.size} entries")
        if previous is not None and checkpoint.size < previous.size:
            raise _Failure(f"{label}: smaller than checkpoint {number - 1} (size {previous.size}): checkpoints must not shrink")
        root = roots.get(checkpoint.size)
        if root is None:
            raise _NeedRoots({checkpoint.size} | _remaining_sizes(lines, header.checkpoints - number - 1))
        if root != checkpoint.root:
            if previous is not None and previous.size == checkpoint.size:
                detail = f"checkpoint {number - 1} signed another root at the same size"
            else:
                first = previous.size if previous is not None else 0
                detail = f"an entry in {first}..{checkpoint.size - 1} differs from what was signed"
            raise _Failure(f"{label}: root does not match the entries ({detail})")
        previous = state.latest = checkpoint
        state.checkpoints = number + 1
        if progress is not None:
            progress("checkpoints", number + 1, header.checkpoints)
    if lines.line("end of file") is not None or lines.rest:
        number = lines.number if not lines.rest else lines.number + 1
        raise _Failure(f"line {number}: unexpected data after the last checkpoint (the header announces {header.checkpoints})")


def _remaining_sizes(lines: _Lines, count: int) -> set[int]:
    sizes: set[int] = set()
    for _ in range(count):
        line = lines.line("checkpoint")
        if line is None:
            break
        size = _size_hint(line)
        if size is not None:
            sizes.add(size)
    return sizes


# --- the whole check -------------------------------------------------------------------------


def _verify(
    path: str | os.PathLike[str],
    trusted_note: str | None,
    key_verifier: Verifier | None,
    progress: Progress | None,
    state: _State,
    extra_sizes: set[int],
    jobs: int,
) -> None:
    with open(path, "rb", buffering=0) as handle:
        lines = _Lines(handle)
        header = _header(lines)
        state.origin, state.size = header.origin, header.size
        if key_verifier is not None:
            if header.vkey != _canonical_vkey(key_verifier):
                raise _Failure("header: vkey is not the key given with --key")
            verifier = key_verifier
        else:
            try:
                verifier = parse_vkey(header.vkey)
            except NoteError as exc:
                raise _Failure(f"header: vkey is malformed ({exc})") from None
            if header.vkey != _canonical_vkey(verifier):
                raise _Failure("header: vkey is not written in its one canonical form")
        trusted: Checkpoint | None = None
        if trusted_note is not None:
            trusted = _open(trusted_note if trusted_note.endswith("\n") else trusted_note + "\n", verifier, "trusted checkpoint")
            label = f"trusted checkpoint (size {trusted.size})"
            if trusted.origin != header.origin:
                raise _Failure(f"{label}: origin {trusted.origin!r} is not the export's {header.origin!r}")
            if trusted.size > header.size:
                raise _Failure(
                    f"{label}: the export holds only {header.size} entries (the log shrank, or the export is cut short)"
                )
        hinted, entries_end = _look_at_end(path, lines.offset)
        wanted = {size for size in hinted | extra_sizes if size <= header.size}
        if trusted is not None:
            wanted.add(trusted.size)
        if jobs > 1 and header.size >= PARALLEL_MIN_ENTRIES and entries_end is not None and _can_fork():
            roots = _entries_parallel(path, lines.offset, entries_end, header.size, wanted, jobs, progress, state)
            handle.seek(entries_end)
            lines = _Lines(handle, number=1 + header.size, offset=entries_end)
        else:
            roots = _entries(lines, header.size, wanted, progress, state)
        _checkpoints(lines, header, verifier, roots, progress, state)
        if trusted is not None:
            if roots[trusted.size] != trusted.root:
                raise _Failure(
                    f"trusted checkpoint (size {trusted.size}): root does not match the entries (the log was rewritten)"
                )
            state.trusted = trusted


def _canonical_vkey(verifier: Verifier) -> str:
    return vkey(verifier.name, verifier.public_key.public_bytes(Encoding.Raw, PublicFormat.Raw))


def _can_fork() -> bool:
    return "forkserver" in multiprocessing.get_all_start_methods()


def _start_method() -> str:
    """``fork`` when this process runs no other thread (the command line): it starts fastest. Otherwise
    (inside a server or a test run) ``forkserver``: forking a process that runs other threads can copy
    a held lock into the child and hang it."""
    return "fork" if threading.active_count() == 1 else "forkserver"


def verify_export(
    path: str | os.PathLike[str],
    trusted_note: str | None = None,
    key: str | None = None,
    progress: Progress | None = None,
    *,
    jobs: int = 1,
) -> Report:
    """Verify an export file. ``trusted_note`` is a signed checkpoint note seen earlier; ``key`` the
    verifier key (vkey) the export's must equal; ``progress(what, done, total)`` is called as it goes.

    With ``jobs`` > 1 (and ``forkserver``), the entries of a large export are checked in that many worker
    processes; the result is the same. Raises :class:`UsageError` for a malformed ``key`` and
    :class:`OSError` when the file cannot be read."""
    key_verifier: Verifier | None = None
    if key is not None:
        try:
            key_verifier = parse_vkey(key)
        except NoteError as exc:
            raise UsageError(f"--key is not a verifier key: {exc}") from None
    started = time.perf_counter()
    extra: set[int] = set()
    problem: str | None = None
    for _attempt in range(3):
        state = _State()
        try:
            _verify(path, trusted_note, key_verifier, progress, state, extra, jobs)
        except _Failure as failure:
            problem = str(failure)
        except _NeedRoots as need:
            extra |= need.sizes
            continue
        except _Serial:
            jobs = 1
            continue
        break
    else:  # pragma: no cover - only when the file changes while it is read
        problem = "the file changed while it was read"
    return Report(
        path=os.fspath(path),
        ok=problem is None,
        problem=problem,
        origin=state.origin,
        size=state.size,
        entries_checked=state.entries_checked,
        checkpoints=state.checkpoints,
        root=state.root,
        latest=state.latest,
        trusted=state.trusted,
        key_given=key is not None,
        seconds=time.perf_counter() - started,
    )


# --- command line ----------------------------------------------------------------------------


class _ProgressLine:
    """A single updating line on a terminal: entries per second and percent, a few times a second."""

    def __init__(self, stream: TextIO, interval: float = 0.25) -> None:
        self._stream = stream
        self._interval = interval
        self._started = time.monotonic()
        self._last = 0.0
        self._shown = False

    def __call__(self, what: str, done: int, total: int) -> None:
        now = time.monotonic()
        if now - self._last < self._interval:
            return
        self._last = now
        elapsed = max(now - self._started, 1e-9)
        percent = 100.0 * done / total if total else 100.0
        rate = f", {done / elapsed:,.0f} entries/s" if what == "entries" else ""
        self._stream.write(f"\r\x1b[Kverifying {what}: {done:,}/{total:,} ({percent:.1f}%){rate}")
        self._stream.flush()
        self._shown = True

    def clear(self) -> None:
        if self._shown:
            self._stream.write("\r\x1b[K")
            self._stream.flush()


def _default_jobs() -> int:
    try:
        available = len(os.sched_getaffinity(0))
    except AttributeError:  # not on every platform
        available = os.cpu_count() or 1
    return max(1, min(4, available))


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; the exit status: 0 verified, 1 a problem found, 2 a usage error or an unreadable file."""
    parser = argparse.ArgumentParser(
        prog="python -m supervision.verify",
        description="Verify a ledger export offline: every entry, the Merkle tree and every signed checkpoint.",
    )
    parser.add_argument("file", help="the export (JSON Lines, from GET /api/supervision/ledger/export)")
    parser.add_argument(
        "--trusted-checkpoint",
        metavar="NOTE_FILE",
        help="a signed checkpoint seen earlier (GET /api/supervision/ledger/checkpoint): the export must extend it",
    )
    parser.add_argument("--key", metavar="VKEY", help="the published verifier key; the export's must be the same")
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress display")
    parser.add_argument(
        "--jobs",
        "-j",
        type=int,
        default=_default_jobs(),
        metavar="N",
        help="worker processes for the entries (default: %(default)s)",
    )
    args = parser.parse_args(argv)
    _keep_freed_memory()  # this process is ours alone: the command line
    if args.jobs < 1:
        parser.error("--jobs must be at least 1")
    trusted: str | None = None
    if args.trusted_checkpoint is not None:
        try:
            trusted = Path(args.trusted_checkpoint).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            print(f"cannot read the trusted checkpoint {args.trusted_checkpoint}: {exc}", file=sys.stderr)
            return 2
    progress = _ProgressLine(sys.stderr) if not args.quiet and sys.stderr.isatty() else None
    try:
        report = verify_export(args.file, trusted_note=trusted, key=args.key, progress=progress, jobs=args.jobs)
    except UsageError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"cannot read {args.file}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    finally:
        if progress is not None:
            progress.clear()
    if report.ok:
        print(report.summary())
        return 0
    print(report.summary(), file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
