"""Line numbers of a text file, counted in numpy blocks: errors name the line a row is on even
when the file has blank lines, and ordered splits need the row count before reading."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np


def nonempty_lines(path: Path, block_size: int = 16 << 20) -> Iterator[np.ndarray]:
    """1-based numbers of the file's non-empty lines, block by block.

    The parser skips empty lines, so data rows are the non-empty lines: ordered splits count
    them, and error messages map a row to its line through them even when a file has blank lines.
    """
    line, offset, last_nl, prev = 1, 0, -1, 10
    with open(path, "rb") as f:
        while block := f.read(block_size):
            b = np.frombuffer(block, dtype=np.uint8)
            pos = np.flatnonzero(b == 10)
            starts = np.concatenate(([last_nl + 1 - offset], pos[:-1] + 1))[: pos.size]
            before = np.where(pos > 0, b[np.maximum(pos - 1, 0)], prev)
            length = pos - starts
            empty = (length == 0) | ((length == 1) & (before == 13))  # "\n" or "\r\n" alone
            yield line + np.flatnonzero(~empty)
            line += pos.size
            if pos.size:
                last_nl = offset + int(pos[-1])
            offset += b.size
            prev = int(b[-1])
    rest = offset - last_nl - 1  # bytes after the last newline: an unterminated last line
    if rest > 1 or (rest == 1 and prev != 13):
        yield np.array([line])


def count_lines(path: Path) -> int:
    """Number of non-empty lines, read in blocks (for ordered splits)."""
    return sum(int(numbers.size) for numbers in nonempty_lines(path))
