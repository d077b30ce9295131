"""Which raw file feeds which split, and how the train file's rows divide among the splits
not given as files: by a seeded hash of the row number (independent of block sizes), or in
file order for time-ordered logs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mtkd.data.hashing import uniform_from_index
from mtkd.data.schema import Schema
from mtkd.errors import MtkdError


@dataclass
class Source:
    """One raw file and how its rows divide into splits."""

    paths: list[Path]
    splits: list[str]
    ratios: list[float]
    ordered: bool
    seed: int

    def assign(self, start: int, n: int, total: int | None) -> np.ndarray:
        """Split number (index into `self.splits`) of rows start..start+n."""
        if len(self.splits) == 1:
            return np.zeros(n, dtype=np.int8)
        rows = np.arange(start, start + n, dtype=np.int64)
        cum = np.cumsum(self.ratios)[:-1]
        if self.ordered:
            assert total is not None
            bounds = np.floor(cum * total + 1e-9).astype(np.int64)
            return np.searchsorted(bounds, rows, side="right").astype(np.int8)
        return np.searchsorted(cum, uniform_from_index(rows, self.seed), side="right").astype(np.int8)


def plan_sources(
    schema: Schema,
    train: Path | list[Path],
    valid: Path | None = None,
    test: Path | None = None,
    ratios: list[float] | None = None,
    ordered: bool | None = None,
    seed: int | None = None,
) -> list[Source]:
    """Which file feeds which split. `ratios` divide the train file into the splits not given as files."""
    from_train = ["train"] + [n for n, p in (("valid", valid), ("test", test)) if p is None]
    seed = schema.split.seed if seed is None else seed
    ordered = schema.split.ordered if ordered is None else ordered
    origin = "--split"
    if ratios is None:
        ratios, origin = _schema_ratios(schema, from_train), "the schema's split.ratios"
    if len(ratios) != len(from_train):
        example = ["0.8", "0.1", "0.1"] if len(from_train) == 3 else ["0.9", "0.1"]
        example = (f"--split {','.join(example)}" if origin == "--split"
                   else f"split: {{ratios: [{', '.join(example)}]}}")
        raise MtkdError(
            f"{origin} has {len(ratios)} ratios ({ratios}) but the train file must fill {len(from_train)} "
            f"split(s) ({', '.join(from_train)}); give {len(from_train)} ratios, e.g. {example}"
            + ("" if len(from_train) == 1 else ", or the missing splits as files (--valid / --test)"))
    if any(r <= 0 for r in ratios) or abs(sum(ratios) - 1.0) > 1e-6:
        raise MtkdError(f"{origin} {ratios} must be positive and sum to 1")
    trains = [Path(t) for t in (train if isinstance(train, (list, tuple)) else [train])]
    if not trains:
        raise MtkdError("no training file given (--train FILE)")
    sources = [Source(trains, from_train, list(ratios), bool(ordered), int(seed))]
    for name, p in (("valid", valid), ("test", test)):
        if p is not None:
            sources.append(Source([Path(p)], [name], [1.0], False, int(seed)))
    return sources


def _schema_ratios(schema: Schema, from_train: list[str]) -> list[float]:
    """The schema's ratios for the splits the train file fills, in order. Three ratios (train,
    valid, test) serve fewer splits too: a split given as its own file hands its share to train
    (0.8/0.1/0.1 with --test FILE: 0.9/0.1). Any other count must match (plan_sources says so)."""
    given = list(schema.split.ratios)
    if len(given) == len(from_train):
        return given
    if len(from_train) == 1:
        return [1.0]
    if len(given) == 3:
        keep = [r for name, r in zip(("train", "valid", "test"), given) if name in from_train]
        keep[0] += sum(given) - sum(keep)
        return [round(r, 12) for r in keep]
    return given
