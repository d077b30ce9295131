"""Row views of a dataset: training on train + most validation rows, or on a fraction of train.

For "early stopping by distillation loss" with the validation rows put to use: the student
trains on train + (valid minus a held-out slice), with hard labels and teacher soft labels,
and stops on its KD loss over the held-out slice, which needs no labels. Rows are chosen by
a seeded hash of their row number, so the slice is the same on every run and resume.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from mtkd.data.hashing import uniform_from_index
from mtkd.data.store import Dataset, Split


RowMap = dict[str, list[tuple[str, "np.ndarray | None"]]]


class RowView:
    """A dataset whose splits are rows of a base dataset's splits, given by a row map:
    split -> [(base split, row numbers or None for all), ...], concatenated in order."""

    def __init__(self, base: Dataset, row_map: RowMap, tag: str):
        self.base = base
        self.root: Path = base.root
        self.feature_map = base.feature_map
        self.manifest = base.manifest
        self._map = row_map
        self._tag = tag
        self._splits: dict[str, Split] = {}

    @property
    def checksum(self) -> str:
        return f"{self.base.checksum}+{self._tag}"

    @property
    def split_names(self) -> list[str]:
        return [s for s in ("train", "valid", "test") if all(b in self.base.split_names for b, _ in self._map[s])]

    def row_map(self, split: str) -> list[tuple[str, np.ndarray | None]]:
        """(base split, row numbers or None for all) making up `split`, in order."""
        return self._map[split]

    def gather(self, split: str, parts: dict[str, Any]) -> np.ndarray:
        """Rows of `split` from per-base-split arrays (e.g. cached teacher logits)."""
        return np.concatenate([np.asarray(parts[b]) if idx is None else np.asarray(parts[b])[idx]
                               for b, idx in self._map[split]])

    def split(self, name: str) -> Split:
        if name not in self._splits:
            bases = {b: self.base.split(b).arrays for b, _ in self._map[name]}
            keys = list(next(iter(bases.values())))
            arrays = {k: self.gather(name, {b: a[k] for b, a in bases.items()}) for k in keys}
            self._splits[name] = Split(name, int(arrays["label"].shape[0]), arrays)
        return self._splits[name]


class MergedDataset(RowView):
    """Splits: train = train + valid[~holdout], valid = valid[holdout], test = test."""

    def __init__(self, base: Dataset, holdout: float = 0.2, seed: int = 0):
        if not 0 < holdout < 1:
            raise ValueError("holdout must be in (0, 1)")
        held = uniform_from_index(np.arange(base.split("valid").rows), seed) < holdout
        super().__init__(base, {
            "train": [("train", None), ("valid", np.flatnonzero(~held))],
            "valid": [("valid", np.flatnonzero(held))],
            "test": [("test", None)],
        }, f"valid{holdout}")


class SubsetDataset(RowView):
    """Splits: train = a seeded `fraction` of the training rows; valid and test unchanged.
    For learning curves and for a deliberately weak teacher (one trained on 5% of the data)."""

    def __init__(self, base: Dataset, fraction: float, seed: int = 0):
        if not 0 < fraction <= 1:
            raise ValueError("fraction must be in (0, 1]")
        rows = base.split("train").rows
        keep = np.flatnonzero(uniform_from_index(np.arange(rows), seed + 104729) < fraction)
        super().__init__(base, {"train": [("train", keep if keep.size else np.arange(1))],
                                "valid": [("valid", None)], "test": [("test", None)]}, f"train{fraction}")
