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
