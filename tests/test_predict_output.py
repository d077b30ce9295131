"""Where `mtkd predict` writes: never over its input, through a symlink, never onto a pipe; and
a SIGTERM'd prepare or predict cleans up as Ctrl-C does (real subprocesses, real signals)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from mtkd.config import load_train_config
from mtkd.data.prepare import prepare
from mtkd.data.schema import schema_from_dict
from mtkd.errors import MtkdError
from mtkd.serve.predict import predict_file
from mtkd.train.run import train_run

SCHEMA = {"label": "y", "features": [{"name": "c", "type": "categorical"}, {"name": "x", "type": "numeric"}]}


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("predict_out")
    raw = root / "a.csv"
    raw.write_text("y,c,x\n" + "".join(f"{i % 2},{'abc'[i % 3]},{i % 7}\n" for i in range(300)))
    prepare(schema_from_dict(SCHEMA), root / "ds", raw)
    cfg = load_train_config(None, ["epochs=1", "batch_size=64", "device=cpu"], model="lr")
    train_run(cfg, root / "ds", root / "run", log=lambda s: None, progress=False)
    return raw, root / "run"


def test_out_is_never_the_input_a_pipe_or_a_replaced_link(world, tmp_path) -> None:
    raw, run = world
    victim = tmp_path / "victim.csv"
    victim.write_bytes(raw.read_bytes())
    with pytest.raises(MtkdError, match="is the --input file"):
        predict_file(run, victim, victim)
    alias = tmp_path / "alias.csv"
    alias.symlink_to(victim)
    with pytest.raises(MtkdError, match="is the --input file"):
        predict_file(run, victim, alias)
    assert victim.read_bytes() == raw.read_bytes()

    target = tmp_path / "scores.csv"
    target.write_text("old\n")
    link = tmp_path / "latest.csv"
    link.symlink_to(target)
    predict_file(run, raw, link)
    assert link.is_symlink() and target.read_text().startswith('"row","probability"')

    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(MtkdError, match="is not a regular file"):
        predict_file(run, raw, fifo)
    assert fifo.is_fifo()


def test_sigterm_cleans_up_like_ctrl_c(tmp_path) -> None:
    """`kill` / `timeout` / systemd send SIGTERM: the prepare's .partial directory is removed and
    the exit code is 143 (it was killed on the spot, leaving tens of MB behind)."""
    raw = tmp_path / "big.csv"
    subprocess.run([sys.executable, "-m", "mtkd", "data", "synth", "--rows", "400000", "--out", str(raw)],
                   check=True, capture_output=True)
    schema = Path(__file__).resolve().parents[1] / "configs" / "datasets" / "synthetic.yaml"
    proc = subprocess.Popen([sys.executable, "-m", "mtkd", "data", "prepare", "--schema", str(schema),
                             "--train", str(raw), "--out", str(tmp_path / "ds")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not list(tmp_path.glob(".ds.partial-*")) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "prepare finished before it could be stopped"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143 and "terminated" in err, err
    assert not list(tmp_path.glob(".ds.partial-*")) and not (tmp_path / "ds").exists()


def test_predict_and_export_take_a_moved_dataset(world, tmp_path, capsys) -> None:
    """The hint for a moved dataset names --data, and predict, export and serve take it."""
    import shutil

    from mtkd.cli import main

    raw, run = world
    moved_run = tmp_path / "run"
    shutil.copytree(run, moved_run)
    shutil.copytree(run.parent / "ds", tmp_path / "ds_moved")
    import yaml

    saved = yaml.safe_load((moved_run / "config.yaml").read_text())
    (moved_run / "config.yaml").write_text(yaml.safe_dump({**saved, "data": str(tmp_path / "gone")}))
    assert main(["predict", str(moved_run), "--input", str(raw), "--out", str(tmp_path / "p.csv")]) == 2
    assert "give its new place with --data DIR (mtkd evaluate, predict, export or serve)" in \
        " ".join(capsys.readouterr().err.split())
    data = ["--data", str(tmp_path / "ds_moved")]
    assert main(["predict", str(moved_run), "--input", str(raw), "--out", str(tmp_path / "p.csv"), *data]) == 0
    predict_file(run, raw, tmp_path / "q.csv")
    assert (tmp_path / "p.csv").read_text() == (tmp_path / "q.csv").read_text()
    assert main(["export", str(moved_run), "--out", str(tmp_path / "e"), *data]) == 0
    assert (tmp_path / "e" / "model.onnx").exists()
    # serve, in its own process over loopback: refused without --data, the same scores with it
    serve = [sys.executable, "-m", "mtkd", "serve", str(moved_run), "--port", "0"]
    gone = subprocess.run(serve, capture_output=True, text=True, timeout=120)
    assert gone.returncode == 2 and "--data DIR" in gone.stderr, gone.stderr
    proc = subprocess.Popen([*serve, *data], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stderr.readline()
        assert "serving" in line, line + proc.stderr.read()
        url = line.split(" on ", 1)[1].split()[0] + "/predict"
        body = json.dumps({"rows": [{"c": "b", "x": 3}, {"c": "zz"}]}).encode()
        req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as resp:
            served = json.loads(resp.read())["probabilities"]
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    (tmp_path / "two.csv").write_text("c,x\nb,3\nzz,\n")
    predict_file(run, tmp_path / "two.csv", tmp_path / "two.out")
    expected = [float(r.split(",")[1]) for r in (tmp_path / "two.out").read_text().splitlines()[1:]]
    assert served == pytest.approx(expected, abs=1e-6)


def test_a_file_with_no_rows_gets_an_empty_scores_file(world, tmp_path) -> None:
    """A day without traffic: the scores file is its header alone (it was a "no data rows" error)."""
    raw, run = world
    for text, name in (("y,c,x\n", "empty.csv"), ("c,x", "bare.csv")):
        (tmp_path / name).write_text(text)
        r = predict_file(run, tmp_path / name, tmp_path / f"{name}.out")
        assert r["rows"] == 0 and (tmp_path / f"{name}.out").read_text() == '"row","probability"\n'


def test_out_parquet_is_parquet(world, tmp_path) -> None:
    """`--out scores.parquet` wrote CSV text under a .parquet name."""
    import pyarrow.csv as pcsv
    import pyarrow.parquet as pq

    raw, run = world
    predict_file(run, raw, tmp_path / "s.csv")
    predict_file(run, raw, tmp_path / "s.parquet")
    assert pq.read_table(tmp_path / "s.parquet").equals(pcsv.read_csv(tmp_path / "s.csv"))
    (tmp_path / "empty.csv").write_text("c,x\n")
    predict_file(run, tmp_path / "empty.csv", tmp_path / "e.parquet")
    assert pq.read_table(tmp_path / "e.parquet").column_names == ["row", "probability"]


def test_out_dash_streams_the_csv_to_stdout(world, tmp_path) -> None:
    """`--out -` (there was no way to pipe the scores: /dev/stdout was replaced by the rename):
    the CSV goes to standard output, the summary to stderr, also for a file without rows."""
    raw, run = world
    predict_file(run, raw, tmp_path / "file.csv")
    mtkd = [sys.executable, "-m", "mtkd", "predict", str(run), "--input"]
    r = subprocess.run([*mtkd, str(raw), "--out", "-"], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout == (tmp_path / "file.csv").read_text(), r.stderr
    assert "300 rows scored" in r.stderr and not list(tmp_path.glob(".*"))
    (tmp_path / "empty.csv").write_text("y,c,x\n")
    r = subprocess.run([*mtkd, str(tmp_path / "empty.csv"), "--out", "-"], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout == '"row","probability"\n', r.stderr


def test_a_link_to_a_pipe_is_refused_with_the_way_to_stream(world, tmp_path) -> None:
    """A symlink to a FIFO (as /dev/stdout is a link to a descriptor): refused, link and FIFO
    left as they were, and the message says `--out -` streams instead."""
    raw, run = world
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    link = tmp_path / "to_pipe.csv"
    link.symlink_to(fifo)
    for out in (fifo, link):
        with pytest.raises(MtkdError, match="not a regular file.*`--out -` writes the CSV to standard output"):
            predict_file(run, raw, out)
    assert link.is_symlink() and os.readlink(link) == str(fifo) and fifo.is_fifo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pipe", "to_pipe.csv"]


@pytest.mark.parametrize("garbage", ["not json", "[1, 2]", '{"features": [1]}', '{"features": {"c": 3}}'])
def test_data_info_names_a_garbage_encoder(world, tmp_path, garbage, capsys) -> None:
    """`mtkd data info` (no --verify) printed a TypeError traceback for an encoder.json that is
    JSON but not an encoder, and said nothing for one that is not JSON: now a one-line error."""
    import shutil

    from mtkd.cli import main

    ds = tmp_path / "ds"
    shutil.copytree(world[1].parent / "ds", ds)
    assert main(["data", "info", str(ds)]) == 0
    (ds / "encoder.json").write_text(garbage)
    capsys.readouterr()
    assert main(["data", "info", str(ds)]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "encoder.json: cannot be read" in err and "prepare it again" in err
    assert main(["data", "info", str(ds), "--verify"]) == 2
    assert "encoder.json" in capsys.readouterr().err
