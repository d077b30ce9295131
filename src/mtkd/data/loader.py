"""BatchLoader: shuffled, vectorised mini-batches from a memory-mapped split.

Each epoch draws a permutation from (seed, epoch), so the order is the same for the same
seed and different each epoch, and so a resumed run sees the batches the uninterrupted run
would have seen. Rows of a batch are gathered with one `np.take` per array; nothing loops
over rows in Python. Under
torch.distributed each rank takes a disjoint shard of every epoch's permutation.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from mtkd.data.batch import Batch
from mtkd.data.store import Dataset, Split


class BatchLoader:
    """Iterate over one split in batches of typed tensors."""

    def __init__(
        self,
        data: Dataset | Split,
        split: str = "train",
        batch_size: int = 4096,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
        rank: int = 0,
        world_size: int = 1,
        teacher_logits: np.ndarray | None = None,
        teacher_hidden: list[np.ndarray] | None = None,
    ):
        self.split = data.split(split) if hasattr(data, "split_names") else data
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in [0, {world_size})")
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.drop_last = drop_last
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0
        # Plain ndarray views of the memory maps: np.take on them is ~2x faster than indexing
        # np.memmap objects (measured 10.7M vs 5.0M rows/s gathering cat+num+label).
        self.arrays = {k: np.asarray(v) for k, v in self.split.arrays.items()}
        # Cached teacher outputs, row-aligned with the split: joined by row number, so a
        # distillation batch costs one more fancy-index, not a teacher forward pass.
        self.teacher_logits = teacher_logits
        self.teacher_hidden = teacher_hidden
        for arr in ([teacher_logits] if teacher_logits is not None else []) + [
                h for h in (teacher_hidden or []) if h is not None]:
            if arr.shape[0] != self.split.rows:
                raise ValueError(f"teacher outputs have {arr.shape[0]} rows, split {self.split.name!r} has "
                                 f"{self.split.rows}")

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def shard_indices(self, epoch: int | None = None) -> np.ndarray:
        """Row numbers this rank reads in `epoch`, in reading order."""
        n = self.split.rows
        epoch = self.epoch if epoch is None else epoch
        if self.shuffle:
            order = np.random.default_rng([self.seed, epoch]).permutation(n)
        else:
            order = np.arange(n)
        if self.world_size > 1:
            order = np.array_split(order, self.world_size)[self.rank]
        return order

    def __len__(self) -> int:
        n = len(self.shard_indices(0)) if self.world_size > 1 else self.split.rows
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[Batch]:
        order = self.shard_indices()
        n = len(order)
        stop = n - n % self.batch_size if self.drop_last else n
        for start in range(0, stop, self.batch_size):
            yield self.gather(order[start : start + self.batch_size])
        self.epoch += 1

    def gather(self, idx: np.ndarray) -> Batch:
        """One batch: a row gather per array (no sort: sorting costs more than the locality saves)."""
        a = self.arrays

        def take(name: str) -> np.ndarray:
            return np.take(a[name], idx, axis=0)

        seq = {k[4:]: torch.from_numpy(take(k).astype(np.int64)) for k in a if k.startswith("seq_")}
        label = take("label")
        return Batch(
            label=torch.from_numpy(label if label.dtype == np.float32 else label.astype(np.int64)),
            index=torch.from_numpy(idx.astype(np.int64)),
            cat=torch.from_numpy(take("cat").astype(np.int64)) if "cat" in a else None,
            num=torch.from_numpy(take("num")) if "num" in a else None,
            seq=seq,
            group=torch.from_numpy(take("group")) if "group" in a else None,
            scores=torch.from_numpy(take("scores")) if "scores" in a else None,
            teacher_logits=None if self.teacher_logits is None
            else torch.from_numpy(np.ascontiguousarray(self.teacher_logits[idx], dtype=np.float32)),
            teacher_hidden=None if self.teacher_hidden is None
            else [None if h is None else torch.from_numpy(np.ascontiguousarray(h[idx], dtype=np.float32))
                  for h in self.teacher_hidden],
        )
