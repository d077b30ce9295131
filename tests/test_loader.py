"""BatchLoader: every row once per epoch, seeded order per epoch, disjoint rank shards, typed batches."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import toy_rows, toy_schema, toy_schema_dict, write_delimited
from mtkd.data.batch import Batch
from mtkd.data.loader import BatchLoader
from mtkd.data.prepare import prepare
from mtkd.data.schema import schema_from_dict
from mtkd.data.store import Dataset

ROWS = 1000


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Dataset:
    root = tmp_path_factory.mktemp("loader")
    path = write_delimited(root / "toy.csv", toy_rows(ROWS, seed=2))
    prepare(toy_schema(), root / "ds", path, ratios=[0.9, 0.05, 0.05])
    return Dataset(root / "ds")


def epoch_indices(loader: BatchLoader) -> np.ndarray:
    return np.concatenate([b.index.numpy() for b in loader])


def test_each_row_once_per_epoch(dataset: Dataset) -> None:
    loader = BatchLoader(dataset, "train", batch_size=64, seed=3)
    n = dataset.split("train").rows
    assert len(loader) == -(-n // 64)
    for _ in range(3):
        idx = epoch_indices(loader)
        assert idx.size == n
        np.testing.assert_array_equal(np.sort(idx), np.arange(n))
    assert loader.epoch == 3


def test_order_is_seeded_per_epoch(dataset: Dataset) -> None:
    def order(seed: int, epoch: int) -> np.ndarray:
        loader = BatchLoader(dataset, "train", batch_size=100, seed=seed)
        loader.set_epoch(epoch)
        return epoch_indices(loader)

    np.testing.assert_array_equal(order(1, 0), order(1, 0))
    np.testing.assert_array_equal(order(1, 4), order(1, 4))
    assert not np.array_equal(order(1, 0), order(1, 1))
    assert not np.array_equal(order(1, 0), order(2, 0))
    assert not np.array_equal(order(1, 0), np.arange(order(1, 0).size))  # actually shuffled
    # consecutive epochs of one loader equal fresh loaders set to those epochs (resume sees the same batches)
    loader = BatchLoader(dataset, "train", batch_size=100, seed=1)
    np.testing.assert_array_equal(epoch_indices(loader), order(1, 0))
    np.testing.assert_array_equal(epoch_indices(loader), order(1, 1))


def test_no_shuffle_is_file_order(dataset: Dataset) -> None:
    loader = BatchLoader(dataset, "valid", batch_size=7, shuffle=False)
    np.testing.assert_array_equal(epoch_indices(loader), np.arange(dataset.split("valid").rows))


@pytest.mark.parametrize("drop_last", [False, True])
def test_rank_shards_are_disjoint_and_cover(dataset: Dataset, drop_last: bool) -> None:
    n = dataset.split("train").rows
    for epoch in (0, 1):
        shards = []
        for rank in range(3):
            loader = BatchLoader(dataset, "train", batch_size=50, seed=9, rank=rank, world_size=3,
                                 drop_last=drop_last)
            loader.set_epoch(epoch)
            idx = epoch_indices(loader)
            assert len(list(loader)) == len(loader)
            shards.append(idx)
        sizes = [s.size for s in shards]
        allidx = np.concatenate(shards)
        assert allidx.size - np.unique(allidx).size == -n % 3  # disjoint but for the padding rows
        assert len(set(sizes)) == 1  # equal shards: every rank takes the same number of steps
        if drop_last:
            assert all(s % 50 == 0 for s in sizes)
        else:
            np.testing.assert_array_equal(np.unique(allidx), np.arange(n))  # covering


def test_drop_last(dataset: Dataset) -> None:
    n = dataset.split("train").rows
    loader = BatchLoader(dataset, "train", batch_size=64, drop_last=True)
    batches = list(loader)
    assert len(batches) == len(loader) == n // 64
    assert all(len(b) == 64 for b in batches)


def test_batch_types_and_values(dataset: Dataset) -> None:
    split = dataset.split("train")
    loader = BatchLoader(dataset, "train", batch_size=128, seed=0)
    b = next(iter(loader))
    assert len(b) == 128
    assert b.cat.dtype == torch.int64 and b.cat.shape == (128, 2)
    assert b.num.dtype == torch.float32 and b.num.shape == (128, 2)
    assert b.label.dtype == torch.float32 and b.label.shape == (128,)
    assert b.index.dtype == torch.int64
    assert set(b.seq) == {"tags"} and b.seq["tags"].dtype == torch.int64 and b.seq["tags"].shape == (128, 3)
    assert b.group is None and b.scores is None
    idx = b.index.numpy()
    np.testing.assert_array_equal(b.cat.numpy(), split.arrays["cat"][idx])
    np.testing.assert_array_equal(b.num.numpy(), split.arrays["num"][idx])
    np.testing.assert_array_equal(b.label.numpy(), split.arrays["label"][idx])
    np.testing.assert_array_equal(b.seq["tags"].numpy(), split.arrays["seq_tags"][idx])
    moved = b.to("cpu")
    assert torch.equal(moved.cat, b.cat)


def test_loader_from_split_and_bad_arguments(dataset: Dataset) -> None:
    loader = BatchLoader(dataset.split("test"), batch_size=1000, shuffle=False)
    (b,) = list(loader)
    assert len(b) == dataset.split("test").rows
    with pytest.raises(ValueError):
        BatchLoader(dataset, "train", batch_size=0)
    with pytest.raises(ValueError):
        BatchLoader(dataset, "train", rank=3, world_size=3)


def test_group_scores_and_multiclass_batches(tmp_path: Path) -> None:
    rows = [[str(i % 3), f"u{i % 7}", f"c{i % 5}", f"{(i % 10) / 10:.1f}"] for i in range(200)]
    path = write_delimited(tmp_path / "g.csv", rows, header=["y", "user", "c", "s"])
    schema = schema_from_dict({"task": "multiclass", "label": "y", "group": "user", "scores": ["s"],
                               "features": [{"name": "c", "type": "categorical"}]})
    prepare(schema, tmp_path / "ds", path, ratios=[0.8, 0.1, 0.1], ordered=True)
    ds = Dataset(tmp_path / "ds")
    assert ds.feature_map.num_classes == 3 and ds.feature_map.scores == ("s",)
    b = next(iter(BatchLoader(ds, "train", batch_size=32, shuffle=False)))
    assert b.label.dtype == torch.int64 and set(b.label.tolist()) <= {0, 1, 2}
    np.testing.assert_array_equal(b.label.numpy(), np.arange(32) % 3)
    assert b.group.dtype == torch.int64 and b.group.shape == (32,)
    assert b.group[0] == b.group[7] and b.group[0] != b.group[1]  # same user -> same group id
    assert b.scores.dtype == torch.float32 and b.scores.shape == (32, 1)
    np.testing.assert_allclose(b.scores[:, 0].numpy(), (np.arange(32) % 10) / 10, rtol=1e-6)
    assert b.num is None and b.seq == {}
    assert ds.manifest["splits"]["train"]["class_counts"].keys() == {"0", "1", "2"}


def test_numeric_only_dataset_has_no_cat(tmp_path: Path) -> None:
    d = toy_schema_dict(features=[{"name": "x", "type": "numeric", "fill_na": 0}])
    path = write_delimited(tmp_path / "n.csv", toy_rows(100))
    prepare(schema_from_dict(d), tmp_path / "ds", path)
    b = next(iter(BatchLoader(Dataset(tmp_path / "ds"), "train", batch_size=10)))
    assert b.cat is None and b.num.shape == (10, 1)


def assert_same_batches(a: BatchLoader, b: BatchLoader) -> None:
    """Field by field: the same rows, dtypes and shapes."""
    n = 0
    for x, y in zip(a, b, strict=True):
        for name in ("label", "index", "cat", "num", "group", "scores", "teacher_logits"):
            u, v = getattr(x, name), getattr(y, name)
            assert (u is None) == (v is None), name
            if u is not None:
                assert u.dtype == v.dtype and torch.equal(u, v), name
        assert x.seq.keys() == y.seq.keys() and all(torch.equal(x.seq[k], y.seq[k]) for k in x.seq)
        assert (x.teacher_hidden is None) == (y.teacher_hidden is None)
        for u, v in zip(x.teacher_hidden or [], y.teacher_hidden or [], strict=True):
            assert (u is None and v is None) or torch.equal(u, v)
        n += len(x)
    assert n > 0


@pytest.mark.parametrize("shuffle,drop_last,rank,world", [(True, False, 0, 1), (False, True, 0, 1),
                                                          (True, True, 1, 2)])
def test_device_resident_batches_equal_host_batches(dataset: Dataset, shuffle: bool, drop_last: bool,
                                                    rank: int, world: int) -> None:
    """place_on(device) changes where rows are gathered, not which rows or how they are typed."""
    n = dataset.split("train").rows
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(n, 3))  # float64 cached outputs arrive as float32 either way
    hidden = [rng.normal(size=(n, 4)).astype(np.float32), None]
    kw = dict(batch_size=96, shuffle=shuffle, seed=5, drop_last=drop_last, rank=rank, world_size=world,
              teacher_logits=logits, teacher_hidden=hidden)
    host, dev = BatchLoader(dataset, "train", **kw), BatchLoader(dataset, "train", device="cpu", **kw)
    assert dev.device == torch.device("cpu") and host.device is None
    assert dev.device_bytes() == sum(a.nbytes for a in dataset.split("train").arrays.values()) + n * 3 * 4 + n * 4 * 4
    for _ in range(2):  # two epochs: the per-epoch order is the same too
        assert_same_batches(host, dev)
    assert host.epoch == dev.epoch == 2


def test_device_resident_group_scores_multiclass(tmp_path: Path) -> None:
    rows = [[str(i % 3), f"u{i % 7}", f"c{i % 5}", f"{(i % 10) / 10:.1f}", f"t{i % 4}|t{i % 3}"] for i in range(200)]
    path = write_delimited(tmp_path / "g.csv", rows, header=["y", "user", "c", "s", "tags"])
    schema = schema_from_dict({"task": "multiclass", "label": "y", "group": "user", "scores": ["s"],
                               "features": [{"name": "c", "type": "categorical"},
                                            {"name": "tags", "type": "sequence", "separator": "|", "max_len": 3}]})
    prepare(schema, tmp_path / "ds", path, ratios=[0.8, 0.1, 0.1])
    ds = Dataset(tmp_path / "ds")
    host = BatchLoader(ds, "train", batch_size=32, seed=1)
    dev = BatchLoader(ds, "train", batch_size=32, seed=1)
    dev.place_on("cpu")
    assert_same_batches(host, dev)


def test_uneven_split_gives_every_rank_the_same_steps(dataset: Dataset) -> None:
    """Rank shards differing by one row can differ by one batch; each step is a collective, so a
    rank with an extra step would wait forever. The order is padded to equal shards instead."""
    n = dataset.split("train").rows
    world = next(w for w in (7, 11, 13, 17) if n % w)
    bs = -(-n // world) - 1  # unpadded shards of ceil(n/w) and floor(n/w) rows would take 2 and 1 batches
    loaders = [BatchLoader(dataset, "train", batch_size=bs, seed=2, rank=r, world_size=world) for r in range(world)]
    steps = {len(list(loader)) for loader in loaders}
    assert steps == {len(loaders[0])} and len(loaders[0]) == 2
    rows = np.concatenate([np.concatenate([b.index.numpy() for b in loader]) for loader in loaders])
    assert rows.size == n + (-n % world) and np.array_equal(np.unique(rows), np.arange(n))


def test_ranks_at_a_fraction_of_the_batch_read_one_process_s_batches(dataset: Dataset) -> None:
    """Step k of W ranks at batch_size / W reads, together, the rows of one process's step k at
    batch_size (the README's promise). Contiguous blocks gave each rank its own stretch of the
    order: the same epoch, other batches, another optimisation."""
    world, bs = 2, 64
    n = dataset.split("train").rows - dataset.split("train").rows % world
    alone = [b.index.numpy() for b in BatchLoader(dataset, "train", batch_size=bs, seed=5)]
    ranks = [[b.index.numpy() for b in BatchLoader(dataset, "train", batch_size=bs // world, seed=5, rank=r,
                                                   world_size=world)] for r in range(world)]
    assert all(len(r) == len(alone) for r in ranks)
    full = n // bs  # the last, partial batch of an odd split also holds a padding row
    for k in range(full):
        assert np.array_equal(np.sort(np.concatenate([r[k] for r in ranks])), np.sort(alone[k]))


def test_more_ranks_than_rows_still_take_the_same_steps(dataset: Dataset) -> None:
    """A split smaller than the world (a tiny valid split, many ranks): the padding repeats the
    order as often as needed, so no rank is left with an empty shard and fewer steps."""
    n = dataset.split("valid").rows
    world = 2 * n + 3
    shards = [BatchLoader(dataset, "valid", batch_size=1, seed=2, rank=r, world_size=world).shard_indices(0)
              for r in range(world)]
    assert {s.size for s in shards} == {1}
    assert np.array_equal(np.unique(np.concatenate(shards)), np.arange(n))


def test_batch_select_gathers_every_field():
    """Rows by index tensor are copies of every field, teacher outputs included; `head` is views."""
    n = 6
    b = Batch(label=torch.arange(n, dtype=torch.float32), index=torch.arange(n) + 100,
              cat=torch.arange(2 * n).view(n, 2), num=torch.randn(n, 3), seq={"tags": torch.arange(4 * n).view(n, 4)},
              group=torch.arange(n) % 2, scores=torch.rand(n, 1), teacher_logits=torch.randn(n, 2),
              teacher_hidden=[torch.randn(n, 5), None])
    idx = torch.tensor([4, 0, 4])
    s = b.select(idx)
    assert len(s) == 3 and s.index.tolist() == [104, 100, 104] and s.cat.tolist() == [[8, 9], [0, 1], [8, 9]]
    for name in ("label", "num", "group", "scores", "teacher_logits"):
        assert torch.equal(getattr(s, name), getattr(b, name)[idx]), name
    assert torch.equal(s.seq["tags"], b.seq["tags"][idx]) and torch.equal(s.teacher_hidden[0], b.teacher_hidden[0][idx])
    assert s.teacher_hidden[1] is None
    s.num += 1  # a copy: the batch is untouched
    assert not torch.equal(s.num, b.num[idx])
    h = b.head(2)
    assert len(h) == 2 and h.num.data_ptr() == b.num.data_ptr() and h.seq["tags"].shape == (2, 4)
