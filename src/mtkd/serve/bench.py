"""Latency and throughput of a model on real rows (PyTorch eager)."""

from __future__ import annotations

import statistics
import time

import torch

from mtkd.data.batch import Batch
from mtkd.data.loader import BatchLoader
from mtkd.data.store import Dataset


def first_rows(dataset: Dataset, split: str, rows: int) -> Batch:
    loader = BatchLoader(dataset, split, batch_size=rows, shuffle=False)
    return next(iter(loader))


@torch.no_grad()
def batch_latency_ms(model: torch.nn.Module, batch: Batch, repeats: int = 20, warmup: int = 3,
                     stat: str = "min") -> float:
    """Wall time of one forward pass over `batch` in milliseconds: the minimum of `repeats` by
    default (other processes on a small machine only ever add time), or the median."""
    model.eval()
    for _ in range(warmup):
        model(batch)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        model(batch)
        times.append((time.perf_counter() - t) * 1000)
    return min(times) if stat == "min" else statistics.median(times)


def random_arrays(scorer, rows: int, seed: int = 0) -> dict:
    """Encoded-looking input arrays for a scorer: ids drawn inside each field's vocabulary,
    numerics standard normal (latency does not depend on the values)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    s, enc = scorer.schema, scorer.encoder
    out = {}
    cats = [n for n, _ in s.categorical()]
    if cats:
        out["cat"] = np.stack([rng.integers(1, max(2, enc.vocab_size(n)), rows) for n in cats], 1).astype(np.int32)
    if s.numeric():
        out["num"] = rng.normal(size=(rows, len(s.numeric()))).astype(np.float32)
    for n, spec in s.sequences():
        out[f"seq_{n}"] = rng.integers(1, max(2, enc.vocab_size(n)), (rows, spec.max_len)).astype(np.int32)
    return out


def scorer_latency(scorer, batch_sizes: tuple[int, ...] = (1, 256, 4096), repeats: int = 50) -> dict[int, dict]:
    """Per batch size: median and p99 milliseconds of `score_arrays` (encoded input to
    probabilities), and rows/s at the median."""
    import numpy as np

    out = {}
    for b in batch_sizes:
        arrays = random_arrays(scorer, b)
        for _ in range(3):
            scorer.score_arrays(arrays)
        times = []
        for _ in range(repeats if b < 4096 else max(5, repeats // 5)):
            t = time.perf_counter()
            scorer.score_arrays(arrays)
            times.append((time.perf_counter() - t) * 1000)
        p50 = statistics.median(times)
        out[b] = {"p50_ms": p50, "p99_ms": float(np.percentile(times, 99)), "rows_per_s": b / (p50 / 1000)}
    return out


def scorer_ms_per_row(scorer, arrays: dict, repeats: int = 20, warmup: int = 3) -> float:
    """Best-of-`repeats` milliseconds per row of one `score_arrays` call over `arrays`."""
    rows = len(next(iter(arrays.values())))
    for _ in range(warmup):
        scorer.score_arrays(arrays)
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        scorer.score_arrays(arrays)
        best = min(best, (time.perf_counter() - t) * 1000)
    return best / rows
