"""Nothing is lost and nothing stale is used: damaged teacher caches are scored again, an export
follows its run's current weights, concurrent writers of one export or experiment are serialised
or refused, and a full disk is one line naming the file."""

from __future__ import annotations

import errno
import json
import multiprocessing as mp
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import typer
import yaml

from mtkd.cli_exit import run_app
from mtkd.config import load_train_config
from mtkd.data.atomic import exclusive
from mtkd.data.prepare import prepare
from mtkd.data.schema import load_schema
from mtkd.data.store import Dataset
from mtkd.data.synthetic import write_synthetic
from mtkd.distill.teachers import TeacherSet, TeacherSpec, score_teachers
from mtkd.pipeline import _exported, _read_json
from mtkd.serve.export import export_run
from mtkd.train.run import train_run

REPO = Path(__file__).resolve().parents[1]
SCHEMA = REPO / "configs/datasets/synthetic.yaml"
QUIET = {"progress": False, "log": lambda s: None}


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("integrity")
    write_synthetic(root / "s.csv", rows=2000, seed=2)
    prepare(load_schema(SCHEMA), root / "ds", root / "s.csv")
    for seed in (1, 2):
        cfg = load_train_config(None, ["epochs=1", "batch_size=512", "device=cpu", f"seed={seed}",
                                       "params.embedding_dim=4", "params.hidden_units=[8]"], model="dnn")
        train_run(cfg, root / "ds", root / f"dnn{seed}", **QUIET)
    return root


def _fresh_dataset(world: Path, tmp_path: Path) -> Dataset:
    shutil.copytree(world / "ds", tmp_path / "ds")
    return Dataset(tmp_path / "ds")


@pytest.mark.parametrize("damage", ["flip", "truncate", "empty", "delete"])
def test_a_damaged_teacher_cache_is_scored_again(world, tmp_path, damage):
    ds = _fresh_dataset(world, tmp_path)
    spec = TeacherSpec("dnn", run=str(world / "dnn1"))
    (cache,) = score_teachers(ds, [spec], log=lambda s: None)
    good = np.load(cache / "train_logits.npy").copy()
    f = cache / "train_logits.npy"
    if damage == "flip":  # same size, other numbers: a stray write or a bad disk
        a = np.load(f, mmap_mode="r+")
        a[:100] = 50.0
        a.flush()
        del a
    elif damage == "truncate":
        f.write_bytes(f.read_bytes()[:300])
    elif damage == "empty":
        f.write_bytes(b"")
    else:
        f.unlink()
    with pytest.raises(Exception, match="mtkd score"):  # a set of caches is never read damaged
        TeacherSet(ds, [spec])
    said: list[str] = []
    (again,) = score_teachers(ds, [spec], log=said.append)
    assert again == cache and any("damaged" in s and "scoring it again" in s for s in said), said
    np.testing.assert_array_equal(TeacherSet(ds, [spec]).logits("train")[:, 0], good)


def test_an_export_follows_the_weights_of_its_run(world, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(world / "dnn1", run)
    export_run(run, tmp_path / "export")
    assert _exported(tmp_path / "export", run)
    shutil.copy(world / "dnn2" / "best.pt", run / "best.pt")  # retrained in place: same path, new weights
    assert not _exported(tmp_path / "export", run)
    (tmp_path / "export" / "export.json").write_text('{"run": "')  # cut short
    assert not _exported(tmp_path / "export", run) and _read_json(tmp_path / "export" / "export.json") == {}


def _export_in_process(run: str, out: str, formats: tuple[str, ...], results) -> None:
    try:
        export_run(run, out, formats=formats)
        results.put("ok")
    except Exception as e:  # reported to the parent, which asserts on it
        results.put(f"{type(e).__name__}: {e}")


def test_concurrent_exports_to_one_out_both_finish_whole(world, tmp_path):
    """Two processes used one `.OUT.tmp`: one deleted the other's files, and an export with no
    model.onnx was published with exit status 0."""
    ctx = mp.get_context("fork")
    results = ctx.Queue()
    out = tmp_path / "export"
    procs = [ctx.Process(target=_export_in_process, args=(str(world / "dnn1"), str(out), formats, results))
             for formats in (("onnx",), ("onnx", "torchscript"))]
    for p in procs:
        p.start()
    for p in procs:
        p.join(300)
    assert [results.get(timeout=5) for _ in procs] == ["ok", "ok"]
    meta = json.loads((out / "export.json").read_text())
    for d in meta["formats"].values():
        assert (out / d["file"]).stat().st_size == d["bytes"] > 0
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".export.") and not p.name.endswith(".lock")]


def test_a_second_run_of_one_experiment_is_refused_while_the_first_works(world, tmp_path, run_cli):
    exp = tmp_path / "e.yaml"
    out = tmp_path / "out"
    exp.write_text(yaml.safe_dump({"out": str(out), "seeds": [1], "data": {"schema": str(SCHEMA), "synth": {"rows": 500}},
                                   "students": [{"name": "dnn"}]}))
    with exclusive(out.resolve(), "run", wait=False):
        rc, _, err = run_cli("run", exp)
    assert rc == 2 and "is working on it now" in err
    assert not (out / "data").exists()


def test_a_full_disk_is_one_line_naming_the_file(capsys):
    app = typer.Typer()

    @app.command()
    def write() -> None:
        raise OSError(errno.ENOSPC, "No space left on device", "/data/run/last.pt")

    @app.command()
    def other() -> None:
        raise OSError("[Errno 30] Error writing bytes to file")  # pyarrow's: the errno in the text

    assert run_app(app, ["write"], []) == 2
    assert "error: /data/run/last.pt: No space left on device; free some space" in capsys.readouterr().err
    assert run_app(app, ["other"], []) == 2
    assert "give this user access" in capsys.readouterr().err


def test_a_filesystem_without_flock_works_unlocked(tmp_path, monkeypatch):
    import fcntl

    def no_flock(*a):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_flock)
    with exclusive(tmp_path, "x", wait=False):
        (tmp_path / "written").write_text("1")
    assert (tmp_path / "written").exists()


def test_a_permission_error_of_no_file_keeps_its_traceback():
    app = typer.Typer()

    @app.command()
    def kill() -> None:
        raise PermissionError(errno.EPERM, "Operation not permitted")  # os.kill of another user's process

    @app.command()
    def other() -> None:
        pass

    with pytest.raises(PermissionError):
        run_app(app, ["kill"], [])


def test_a_waiter_says_whom_it_waits_for(tmp_path):
    import threading

    said: list[str] = []
    entered = threading.Event()

    def second() -> None:
        with exclusive(tmp_path, "export", log=said.append):
            entered.set()

    with exclusive(tmp_path, "export"):
        t = threading.Thread(target=second)
        t.start()
        for _ in range(200):  # until the second one has found the lock held
            if said:
                break
            time.sleep(0.05)
        assert said and "waiting for process" in said[0] and not entered.is_set()
    t.join(10)
    assert entered.is_set()


@pytest.mark.parametrize("capacity", [None, 1329])
def test_rows_fill_every_batch_in_order(capacity):
    import torch

    from mtkd.train.rows import Rows

    g = torch.Generator().manual_seed(0)
    rows, parts = Rows(capacity), []
    for k in (5, 300, 1, 700, 320, 3):  # past the first doubling when the size is not known
        parts.append((torch.randn(k, 3, generator=g), torch.randint(0, 2, (k,), generator=g)))
        rows.add(*parts[-1], None)
    logits, labels, groups = rows.tensors()
    assert torch.equal(logits, torch.cat([p[0] for p in parts])) and torch.equal(labels, torch.cat([p[1] for p in parts]))
    assert groups is None
