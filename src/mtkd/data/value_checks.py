"""Values the encoder refuses rather than store wrongly: a number past float32 (stored as inf,
scored as NaN) and one class written two ways (two classes of one)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

from mtkd.errors import DataError


FLOAT32_MAX = float(np.finfo(np.float32).max)


class OutOfRange(DataError):
    """A value that does not fit the encoded arrays, at row `row` of the batch: callers that
    know the file name its line."""

    def __init__(self, row: int, column: str, detail: str):
        super().__init__(f"row {row}, column {column!r}: {detail}")
        self.row, self.column, self.detail = row, column, detail

    def at(self, reader: Any, start: int) -> DataError:
        """The same error, named by the file and line of a batch that starts at row `start`."""
        return DataError(f"{reader.path}: {reader.where(start + self.row)}, column {self.column!r}: {self.detail}")


def check_float32(x: np.ndarray, col: pa.Array, name: str, transforms: list[str]) -> None:
    """Transformed values of numeric column `name` (float64) that float32, the stored type, holds."""
    big = np.abs(x) > FLOAT32_MAX
    if big.any():
        i = int(np.flatnonzero(big)[0])
        raw = col[i].as_py()
        now = "" if raw == x[i] else f" (as {x[i]:g} after its transforms {transforms})"
        raise OutOfRange(i, name, f"{raw!r}{now} is past float32's range (3.4e38), in which it is stored; "
                                  "add `log` to its transforms or scale the column, and prepare again (a model "
                                  "trained without cannot score such a value)")


def check_class_spellings(classes: list[str], label: str) -> None:
    """Classes are matched as written, so `1`, `1.0` and ` 1` would be three classes of one: refused,
    naming them (a binary label reads all three as 1)."""
    def key(c: str) -> Any:
        try:
            return float(c)
        except ValueError:
            return c.strip()

    seen: dict[Any, str] = {}
    for c in classes:
        if (other := seen.setdefault(key(c), c)) != c:
            raise DataError(f"column {label!r} (label): classes {other!r} and {c!r} are one class written two ways; "
                            "a multi-class label is matched as written, so write each class one way in the files")
