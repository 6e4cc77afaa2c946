"""``audit.idx``: where in ``audit.log`` each seq is, so a page costs what it asks for.

A sparse index: for each ``STRIDE``-byte block of the log, the seq and byte offset of the
first record that starts in it, as two little-endian u64s. Reading the records after a
seq is then a binary search and at most one block of records skipped, whatever the size
of the log.

It is derived data: only the log is evidence, and nothing here is fsynced. An index
behind the log (a crash between the log's fsync and the entry's write) is caught up
from the log at open, a torn last entry is cut, and entries the log does not bear out (a
truncated, deleted or rewritten log) make the whole index be rebuilt from it. Rebuilding
reads a few bytes at the start of each block, not the whole log. Only the log's writer
writes the index, holding the log's exclusive lock.
"""

from __future__ import annotations

import bisect
import itertools
import logging
import os
import re
import struct
from array import array
from collections.abc import Iterator
from pathlib import Path

STRIDE = 64 * 1024  # bytes of log per entry: a page read skips at most this much
_ENTRY = struct.Struct("<QQ")  # (seq, offset)
_CHUNK = 64 * 1024
# Lines are written with their fields in a fixed order, seq first (audit_log._line).
_SEQ = re.compile(rb'\{"seq":(0|[1-9][0-9]*),')

logger = logging.getLogger(__name__)


def line_seq(line: bytes) -> int | None:
    """The seq a log line starts with, None when it does not start like a record."""
    match = _SEQ.match(line)
    return int(match[1]) if match else None


def seq_at(fd: int, offset: int) -> int | None:
    """The seq of the line starting at ``offset`` of the log, None when no line of a
    record starts there."""
    if offset and os.pread(fd, 1, offset - 1) != b"\n":
        return None
    return line_seq(os.pread(fd, 32, offset))


def _line_starts(fd: int, lo: int, hi: int) -> Iterator[int]:
    """The offsets in ``[lo, hi)`` at which a line starts."""
    if lo == 0 and hi > 0:
        yield 0
        lo = 1
    pos, n = lo - 1, 512  # a line starts after a newline; the first is usually near
    while pos < hi - 1:
        chunk = os.pread(fd, min(n, hi - 1 - pos), pos)
        if not chunk:
            return
        start = 0
        while (i := chunk.find(b"\n", start)) >= 0:
            yield pos + i + 1
            start = i + 1
        pos, n = pos + len(chunk), min(2 * n, _CHUNK)


def scan(fd: int, start: int, size: int) -> list[tuple[int, int]]:
    """The entries of the blocks from the one holding ``start`` to the end of the log's
    first ``size`` bytes: per block, the first line that starts in it with a seq."""
    entries: list[tuple[int, int]] = []
    for block in range(start // STRIDE, (size + STRIDE - 1) // STRIDE):
        lo, hi = max(start, block * STRIDE), min((block + 1) * STRIDE, size)
        for offset in _line_starts(fd, lo, hi):
            if (seq := seq_at(fd, offset)) is not None:
                entries.append((seq, offset))
                break
    return entries


class SeqIndex:
    """The index of one log file, held in memory and mirrored to ``path``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._seqs = array("Q")
        self._offsets = array("Q")
        self._file = path.open("a+b", buffering=0)

    def load(self, log_fd: int, size: int) -> None:
        """Read the index, and make it agree with the log's first ``size`` bytes:
        rebuilt if any entry is not borne out, caught up to the end."""
        self._file.seek(0)
        raw = self._file.read()
        whole = len(raw) - len(raw) % _ENTRY.size
        entries = [_ENTRY.unpack_from(raw, i) for i in range(0, whole, _ENTRY.size)]
        # Page reads bisect the seqs: they must grow with the offsets, as in the log.
        ordered = all(a[0] <= b[0] and a[1] < b[1] for a, b in itertools.pairwise(entries))
        stale = not ordered or any(
            off >= size or seq_at(log_fd, off) != seq for seq, off in entries
        )
        if stale or whole != len(raw):
            logger.info("audit index %s: %s", self.path, "rebuilt" if stale else "torn entry cut")
            entries = [] if stale else entries
            self._file.truncate(len(entries) * _ENTRY.size)
        self._seqs = array("Q", (seq for seq, _ in entries))
        self._offsets = array("Q", (off for _, off in entries))
        resume = (self._offsets[-1] // STRIDE + 1) * STRIDE if entries else 0
        self._add(scan(log_fd, resume, size))

    def note(self, seq: int, offset: int) -> None:
        """A record was appended at ``offset``: an entry if it is its block's first."""
        if not self._offsets or offset // STRIDE > self._offsets[-1] // STRIDE:
            self._add([(seq, offset)])

    def _add(self, entries: list[tuple[int, int]]) -> None:
        if not entries:
            return
        self._file.seek(0, os.SEEK_END)
        self._file.write(b"".join(_ENTRY.pack(seq, off) for seq, off in entries))
        self._seqs.extend(seq for seq, _ in entries)
        self._offsets.extend(off for _, off in entries)

    def start(self, after_seq: int) -> int:
        """An offset of the log at or before the first record whose seq is above
        ``after_seq`` (seqs only grow along the log)."""
        i = bisect.bisect_right(self._seqs, after_seq) - 1
        return self._offsets[i] if i >= 0 else 0

    def __len__(self) -> int:
        return len(self._seqs)

    def close(self) -> None:
        self._file.close()
