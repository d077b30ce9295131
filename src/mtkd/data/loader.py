"""BatchLoader: shuffled, vectorised mini-batches from a memory-mapped split.

Each epoch draws a permutation from (seed, epoch), so the order is the same for the same
seed and different each epoch, and so a resumed run sees the batches the uninterrupted run
would have seen. Rows of a batch are gathered with one `np.take` per array; nothing loops
over rows in Python. Under
torch.distributed each rank takes its shard of every epoch's permutation: equal sizes (up to
world_size - 1 rows are read twice), so every rank takes the same number of steps.

With `device` set, the split (and any cached teacher outputs) is copied to that device once
and batches are gathered there with `index_select`: on a GPU this takes the host-side gather
and the per-batch host-to-device copy out of every step (plain PyTorch's 1.5M samples/s for a
Criteo DNN on an H200 assumes the data on the GPU). The batches are the same rows in the same
order as without it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

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
        device: torch.device | str | None = None,
        pad_shards: bool = True,
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
        self.pad_shards = pad_shards
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
        self._sources = self._host_arrays()  # name -> (array, dtype a batch of it is cast to, or None)
        self.device: torch.device | None = None
        self.resident: dict[str, torch.Tensor] = {}
        if device is not None:
            self.place_on(device)

    def _host_arrays(self) -> dict[str, tuple[np.ndarray, type | None]]:
        """What `place_on` copies: the split's arrays as stored, teacher outputs as float32."""
        out: dict[str, tuple[np.ndarray, type | None]] = {k: (v, None) for k, v in self.arrays.items()}
        if self.teacher_logits is not None:
            out["teacher_logits"] = (self.teacher_logits, np.float32)
        for i, h in enumerate(self.teacher_hidden or []):
            if h is not None:
                out[f"teacher_hidden_{i}"] = (h, np.float32)
        return out

    def device_bytes(self) -> int:
        """Bytes `place_on` would allocate on the device."""
        return sum(a.size * np.dtype(dt or a.dtype).itemsize for a, dt in self._sources.values())

    def place_on(self, device: torch.device | str) -> None:
        """Copy the split and teacher outputs to `device` once; batches are gathered there from now on."""
        self.device = torch.device(device)
        self.resident = {k: _to_device(a, self.device, dt) for k, (a, dt) in self._sources.items()}

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
        if self.world_size > 1 and self.pad_shards:
            # Training: equal shards, so every rank takes the same number of steps (each step
            # averages gradients over all ranks); the first few rows of the order pad the last
            # ones. Dealt out in turn, not in blocks: step k of the ranks at batch_size / world
            # reads together the rows of one process's step k, so the optimisation is that one's.
            pad = -n % self.world_size
            order = np.resize(order, n + pad) if pad and n else order  # repeats the order when pad > n
            order = order[self.rank :: self.world_size]
        elif self.world_size > 1:  # evaluation: disjoint blocks, every row once, gathered in order
            order = np.array_split(order, self.world_size)[self.rank]
        return order

    def __len__(self) -> int:
        n = len(self.shard_indices(0)) if self.world_size > 1 else self.split.rows
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[Batch]:
        order = self.shard_indices()
        n = len(order)
        stop = n - n % self.batch_size if self.drop_last else n
        if self.device is not None:  # one copy of the epoch's order, then slices of it on the device
            order_t = torch.from_numpy(order.astype(np.int64)).to(self.device)
            for start in range(0, stop, self.batch_size):
                yield self.gather_resident(order_t[start : start + self.batch_size])
        else:
            for start in range(0, stop, self.batch_size):
                yield self.gather(order[start : start + self.batch_size])
        self.epoch += 1

    def gather_resident(self, idx: torch.Tensor) -> Batch:
        """One batch gathered on the device: the same fields, dtypes and rows as `gather`."""
        r = self.resident
        return self._assemble(lambda name: r[name].index_select(0, idx), idx)

    def gather(self, idx: np.ndarray) -> Batch:
        """One batch: a row gather per array (no sort: sorting costs more than the locality saves)."""
        src = self._sources

        def take(name: str) -> torch.Tensor:
            a, dt = src[name]
            x = np.take(a, idx, axis=0) if dt is None else np.ascontiguousarray(a[idx], dtype=dt)
            # integers widen here: numpy's cast of a 4096-row batch is ~4x cheaper than torch's
            return torch.from_numpy(x.astype(np.int64) if x.dtype.kind in "iu" and x.dtype != np.int64 else x)

        return self._assemble(take, torch.from_numpy(idx.astype(np.int64)))

    def _assemble(self, take: Callable[[str], torch.Tensor], index: torch.Tensor) -> Batch:
        """The typed batch from `take(name)` (one row gather of that array): ids as int64, binary
        labels float32, multi-class labels int64, teacher outputs float32."""
        names = self._sources
        label = take("label")
        return Batch(
            label=label if label.dtype == torch.float32 else label.long(),
            index=index,
            cat=take("cat").long() if "cat" in names else None,
            num=take("num") if "num" in names else None,
            seq={k[4:]: take(k).long() for k in names if k.startswith("seq_")},
            group=take("group") if "group" in names else None,
            scores=take("scores") if "scores" in names else None,
            teacher_logits=take("teacher_logits") if "teacher_logits" in names else None,
            teacher_hidden=None if self.teacher_hidden is None
            else [None if h is None else take(f"teacher_hidden_{i}") for i, h in enumerate(self.teacher_hidden)],
        )


def keep_on_device(setting: bool | str, device: torch.device, loader: BatchLoader) -> bool:
    """`data_on_device`: True / False as given; "auto" on a GPU when the loader's arrays take
    under half its free memory (the rest is for the model, activations and evaluation)."""
    if setting is False or (setting == "auto" and device.type != "cuda"):
        return False
    if setting == "auto":
        free, _total = torch.cuda.mem_get_info(device)
        return loader.device_bytes() < free // 2
    return True


def _to_device(a: np.ndarray, device: torch.device, dtype: type | None = None,
               chunk_rows: int = 1 << 20) -> torch.Tensor:
    """Copy a (memory-mapped) array to `device` in row chunks: host memory stays bounded by one
    chunk instead of a second copy of the whole split."""
    dt = np.dtype(dtype) if dtype is not None else a.dtype
    out = torch.empty(a.shape, dtype=torch.from_numpy(np.zeros(0, dt)).dtype, device=device)
    for lo in range(0, a.shape[0], chunk_rows):
        out[lo : lo + chunk_rows].copy_(torch.from_numpy(np.array(a[lo : lo + chunk_rows], dtype=dt)))
    return out
