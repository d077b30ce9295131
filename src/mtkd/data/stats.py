"""Streaming train statistics for the encoder: value counts for vocabularies, and count, mean,
variance and a quantile sample for numeric columns, merged block by block so memory stays near
the vocabulary size however large the file."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mtkd.data.hashing import uniform_from_index

QUANTILE_SAMPLE = 1 << 20  # values kept per column to place bucket edges


class VocabCounter:
    """Streaming value counts, merged in Arrow so memory stays near the vocabulary size."""

    def __init__(self) -> None:
        self.parts: list[pa.Table] = []
        self.pending = 0

    def add(self, values: pa.Array, mask: np.ndarray | None = None) -> None:
        """Count `values` (rows where `mask` is true); dictionary arrays are counted by index."""
        if pa.types.is_dictionary(values.type):
            idx = values.indices.to_numpy(zero_copy_only=False)
            if mask is not None:
                idx = idx[mask]
            counts = np.bincount(idx, minlength=len(values.dictionary))
            seen = np.flatnonzero(counts)
            part = pa.table({"v": values.dictionary.take(pa.array(seen)), "c": pa.array(counts[seen])})
        else:
            if mask is not None:
                values = values.filter(pa.array(mask))
            vc = pc.value_counts(values)
            part = pa.table({"v": vc.field(0), "c": vc.field(1)})
        self.parts.append(part)
        self.pending += part.num_rows
        if self.pending > 4_000_000 and len(self.parts) > 1:
            self.parts = [self._merged()]
            self.pending = self.parts[0].num_rows

    def _merged(self) -> pa.Table:
        t = pa.concat_tables(self.parts)
        return t.group_by("v").aggregate([("c", "sum")]).rename_columns(["v", "c"])

    def vocabulary(self, min_count: int) -> list[str]:
        if not self.parts:
            return []
        t = self._merged()
        t = t.filter(pc.greater_equal(t.column("c"), min_count))
        t = t.take(pc.sort_indices(t, sort_keys=[("c", "descending"), ("v", "ascending")]))
        return t.column("v").to_pylist()


class NumericStats:
    """Count, mean and variance (Chan's merge) plus a bottom-k sample for quantiles."""

    def __init__(self) -> None:
        self.n = 0
        self.mean = 0.0
        self.m2 = 0.0
        self.sample_keys = np.zeros(0)
        self.sample = np.zeros(0)

    def add(self, x: np.ndarray, rows: np.ndarray, sample: bool) -> None:
        if x.size == 0:
            return
        n_b = x.size
        with np.errstate(over="ignore", invalid="ignore"):  # past float64: inf/NaN, refused by the encoder
            mean_b = float(x.mean())
            m2_b = float(((x - mean_b) ** 2).sum())
        delta = mean_b - self.mean
        tot = self.n + n_b
        self.mean += delta * n_b / tot
        self.m2 += m2_b + delta * delta * self.n * n_b / tot
        self.n = tot
        if not sample:
            return
        keys = uniform_from_index(rows, seed=0x5EED)
        self.sample_keys = np.concatenate([self.sample_keys, keys])
        self.sample = np.concatenate([self.sample, x])
        if self.sample.size > 2 * QUANTILE_SAMPLE:
            self._trim()

    def _trim(self) -> None:
        if self.sample.size > QUANTILE_SAMPLE:
            keep = np.argpartition(self.sample_keys, QUANTILE_SAMPLE)[:QUANTILE_SAMPLE]
            self.sample_keys, self.sample = self.sample_keys[keep], self.sample[keep]

    @property
    def std(self) -> float:
        return float(np.sqrt(self.m2 / self.n)) if self.n else 1.0

    def edges(self, bins: int) -> list[float]:
        self._trim()
        if self.sample.size == 0:
            return []
        qs = np.quantile(self.sample, np.linspace(0, 1, bins + 1)[1:-1])
        return [float(v) for v in np.unique(qs)]
