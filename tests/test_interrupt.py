"""SIGTERM (`kill`, `timeout`, systemd, a torchrun agent) on real subprocesses: predict removes its
temporary file and exits 143 as a SIGTERM'd prepare does (tests/test_predict_output.py), a torchrun
job still ends at once with every rank, and `mtkd serve` keeps its own clean stop (exit 0)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mtkd.config import load_train_config
from mtkd.data.prepare import prepare
from mtkd.data.schema import load_schema
from mtkd.data.synthetic import write_synthetic
from mtkd.train.run import train_run

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path, Path]:
    """(raw CSV, dataset, run) of a small DeepFM on synthetic data."""
    root = tmp_path_factory.mktemp("interrupt")
    raw = root / "raw.csv"
    write_synthetic(raw, 3000, seed=3)
    prepare(load_schema(REPO / "configs" / "datasets" / "synthetic.yaml"), root / "ds", raw)
    cfg = load_train_config(None, ["params.embedding_dim=4", "batch_size=256", "epochs=1", "device=cpu"],
                            model="deepfm")
    train_run(cfg, root / "ds", root / "run", log=lambda s: None, progress=False)
    return raw, root / "ds", root / "run"


def _wait_for(path_glob, proc: subprocess.Popen, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not path_glob() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert proc.poll() is None, f"it ended (rc {proc.returncode}) before it could be stopped"
    assert path_glob(), "it never got going"


def test_sigterm_removes_predicts_temporary_file(trained, tmp_path) -> None:
    """A SIGTERM'd predict was killed on the spot and left `.OUT.tmp` (hundreds of MB for a big
    file); now it unwinds like Ctrl-C: no tmp, no half-written --out, exit 143 'terminated'."""
    raw, _, run = trained
    lines = raw.read_text().splitlines(keepends=True)
    big = tmp_path / "big.csv"
    with open(big, "w") as f:  # 600k rows: seconds of scoring, written in a blink
        f.write(lines[0])
        body = "".join(lines[1:])
        for _ in range(200):
            f.write(body)
    out = tmp_path / "scores.csv"
    proc = subprocess.Popen([sys.executable, "-m", "mtkd", "predict", str(run), "--input", str(big), "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    _wait_for(lambda: list(tmp_path.glob(".scores.csv.tmp")), proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143 and "terminated" in err and "Traceback" not in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.csv"]


def test_a_sigterm_torchrun_job_ends_at_once(trained, tmp_path) -> None:
    """The torchrun agent forwards SIGTERM to its ranks: with the CLI's handler they unwind (the
    trainer says how to resume) and the job still ends within seconds, none of its ranks left."""
    _, ds, _ = trained
    out = tmp_path / "run"
    sets = ["epochs=50", "patience=50", "batch_size=16", "params.embedding_dim=4", "device=cpu"]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "mtkd",
           "train", "--data", str(ds), "--model", "deepfm", "--quiet", "--out", str(out),
           *(x for s in sets for x in ("--set", s))]
    job = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=ENV,
                           start_new_session=True)
    try:
        _wait_for(lambda: (out / "last.pt").exists(), job, 120)
        ranks = [int(p) for p in subprocess.run(["pgrep", "-P", str(job.pid)], capture_output=True,
                                                text=True).stdout.split()]
        assert len(ranks) == 2
        t0 = time.monotonic()
        job.send_signal(signal.SIGTERM)
        text, _ = job.communicate(timeout=60)
        took = time.monotonic() - t0
    finally:
        if job.poll() is None:
            os.killpg(job.pid, signal.SIGKILL)
            job.wait()
    assert job.returncode != 0 and took < 20, (job.returncode, took, text[-3000:])
    assert text.count("terminated") == 2, text[-3000:]  # each rank unwound, none was blocked
    for pid in ranks:
        assert not os.path.exists(f"/proc/{pid}") or "zombie" in Path(f"/proc/{pid}/status").read_text().lower()
    assert (out / "last.pt").exists() and not (out / "summary.json").exists()


def test_serve_still_stops_cleanly_on_sigterm(trained) -> None:
    """`mtkd serve` installs its own stop (finish the answers in flight, release the port): a
    SIGTERM ends it with exit 0, not the CLI's 143."""
    _, _, run = trained
    proc = subprocess.Popen([sys.executable, "-m", "mtkd", "serve", str(run), "--port", "0"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=ENV)
    try:
        line = proc.stderr.readline()  # "serving RUN on http://...": the server is up
        assert "serving" in line, line + proc.stderr.read()
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    err = proc.stderr.read()
    assert rc == 0 and "terminated" not in err and "Traceback" not in err, err
