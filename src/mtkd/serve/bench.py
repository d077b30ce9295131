"""Latency and throughput of a model on real rows (PyTorch eager) and of a scorer (PyTorch or ONNX Runtime)."""

from __future__ import annotations

import statistics
import time
from typing import Any, Callable

import numpy as np
import torch

from mtkd.data.batch import Batch
from mtkd.data.loader import BatchLoader
from mtkd.data.store import Dataset


def first_rows(dataset: Dataset, split: str, rows: int) -> Batch:
    loader = BatchLoader(dataset, split, batch_size=rows, shuffle=False)
    return next(iter(loader))


def call_ms(fn: Callable[[], Any], repeats: int = 20, warmup: int = 3) -> list[float]:
    """Wall time of `repeats` calls of `fn` in milliseconds, after `warmup` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000)
    return times


@torch.no_grad()
def batch_latency_ms(model: torch.nn.Module, batch: Batch, repeats: int = 20, warmup: int = 3,
                     stat: str = "min") -> float:
    """Wall time of one forward pass over `batch` in milliseconds: the minimum of `repeats` by
    default (other processes on a small machine only ever add time), or the median."""
    model.eval()
    times = call_ms(lambda: model(batch), repeats, warmup)
    return min(times) if stat == "min" else statistics.median(times)


def random_arrays(scorer: Any, rows: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Encoded-looking input arrays for a scorer: ids drawn inside each field's vocabulary,
    numerics standard normal (latency does not depend on the values)."""
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


def scorer_latency(scorer: Any, batch_sizes: tuple[int, ...] = (1, 256, 4096), repeats: int = 50) -> dict[int, dict]:
    """Per batch size: median and p99 milliseconds of `score_arrays` (encoded input to
    probabilities), and rows/s at the median."""
    out = {}
    for b in batch_sizes:
        arrays = random_arrays(scorer, b)
        times = call_ms(lambda: scorer.score_arrays(arrays), repeats if b < 4096 else max(5, repeats // 5))
        p50 = statistics.median(times)
        out[b] = {"p50_ms": p50, "p99_ms": float(np.percentile(times, 99)), "rows_per_s": b / (p50 / 1000)}
    return out


def scorer_ms_per_row(scorer: Any, arrays: dict[str, np.ndarray], repeats: int = 20) -> float:
    """Best-of-`repeats` milliseconds per row of one `score_arrays` call over `arrays`."""
    rows = len(next(iter(arrays.values())))
    return min(call_ms(lambda: scorer.score_arrays(arrays), repeats)) / rows
