"""Export (real ONNX Runtime), predict (raw file in, scores out) and serve (real HTTP on loopback)."""

from __future__ import annotations

import csv
import json
import os
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from mtkd.cli import main
from mtkd.config import load_train_config
from mtkd.data.prepare import Source, prepare
from mtkd.data.schema import load_schema
from mtkd.data.synthetic import DEFAULT_TEST_SPLIT, write_synthetic
from mtkd.errors import MtkdError
from mtkd.serve.export import export_run
from mtkd.serve.predict import predict_file
from mtkd.serve.scorer import Scorer
from mtkd.serve.server import make_server
from mtkd.train.objectives import Supervised
from mtkd.train.run import load_run, train_run
from mtkd.train.trainer import Trainer

REPO = Path(__file__).resolve().parents[1]
ROWS = 3000
QUIET = dict(progress=False, log=lambda s: None)


def trained(root: Path, task: str, model: str) -> tuple[Path, Path]:
    """(raw CSV, run directory) of a small model trained on synthetic data."""
    raw = root / "raw.csv"
    write_synthetic(raw, ROWS, seed=5, task=task)
    preset = "synthetic.yaml" if task == "binary" else "synthetic_multiclass.yaml"
    prepare(load_schema(REPO / "configs" / "datasets" / preset), root / "ds", raw)
    params = [] if model == "lr" else ["params.embedding_dim=4"]
    cfg = load_train_config(None, params + ["batch_size=256", "epochs=1", "device=cpu"], model=model)
    train_run(cfg, root / "ds", root / "run", **QUIET)
    return raw, root / "run"


@pytest.fixture(scope="module")
def binary(tmp_path_factory) -> tuple[Path, Path, Path]:
    root = tmp_path_factory.mktemp("serve")
    raw, run = trained(root, "binary", "deepfm")
    meta = export_run(run, root / "export", formats=("onnx", "torchscript"))
    assert set(meta["formats"]) == {"onnx", "torchscript"}
    for fmt in meta["formats"].values():
        assert fmt["parity"]["max_abs_diff"] <= 1e-4 and fmt["parity"]["split"] == "valid" and fmt["parity"]["rows"] > 250
    return raw, run, root / "export"


def read_scores(path: Path) -> tuple[list[str], np.ndarray]:
    with open(path) as f:
        rows = list(csv.reader(f))
    return rows[0], np.array([[float(x) for x in r] for r in rows[1:]])


def test_export_is_self_contained_and_matches_pytorch(binary) -> None:
    _raw, run, export = binary
    assert {p.name for p in export.iterdir()} >= {"model.onnx", "model.ts", "encoder.json", "schema.yaml", "export.json"}
    meta = json.loads((export / "export.json").read_text())
    assert meta["model"] == "deepfm" and meta["inputs"] == ["categorical_ids", "numeric_values"]
    onnx, script, torch_ = Scorer.open(export), Scorer.open(export, "torchscript"), Scorer.open(run)
    assert (onnx.engine, script.engine, torch_.engine) == ("onnx", "torchscript", "torch")
    assert Scorer.engines(export) == ["onnx", "torchscript"] and Scorer.engines(run) == []
    rng = np.random.default_rng(0)  # any batch size (the trace saw 8 rows), ids past the vocabulary's end included
    for n in (37, 1):
        arrays = {"cat": rng.integers(0, 50, (n, 26)).astype(np.int32), "num": rng.normal(size=(n, 13)).astype(np.float32)}
        np.testing.assert_allclose(onnx.score_arrays(arrays), torch_.score_arrays(arrays), atol=1e-5)
        np.testing.assert_allclose(script.score_arrays(arrays), torch_.score_arrays(arrays), atol=1e-6)


def test_onnx_weights_are_inside_the_file_unless_too_big(binary, tmp_path, monkeypatch) -> None:
    """model.onnx is one file to copy; weights past the inline limit go to model.onnx.data, and
    an export copied without that file is a clear error naming it, not an onnxruntime traceback."""
    import shutil

    import mtkd.serve.export as export_mod

    _raw, run, export = binary
    assert not (export / "model.onnx.data").exists()
    alone = tmp_path / "copied"
    alone.mkdir()
    for name in ("model.onnx", "encoder.json", "schema.yaml", "export.json"):
        shutil.copy(export / name, alone / name)
    arrays = {"cat": np.zeros((3, 26), np.int32), "num": np.zeros((3, 13), np.float32)}
    np.testing.assert_allclose(Scorer.open(alone).score_arrays(arrays), Scorer.open(run).score_arrays(arrays), atol=1e-5)

    monkeypatch.setattr(export_mod, "ONNX_INLINE_BYTES", 0)
    export_run(run, tmp_path / "external")
    assert (tmp_path / "external" / "model.onnx.data").stat().st_size > 0
    (tmp_path / "external" / "model.onnx.data").unlink()
    with pytest.raises(MtkdError, match=r"model.onnx: onnxruntime cannot load it .*model.onnx.data beside it, "
                                        r"which is missing: copy the whole export directory"):
        Scorer.open(tmp_path / "external")


def test_predict_raw_file_equals_the_trainers_test_predictions(binary, tmp_path) -> None:
    raw, run, export = binary
    _cfg, ds, model = load_run(run)
    trainer = Trainer(_cfg, ds, model, Supervised("binary"), run, **QUIET)
    logits, _label, index, _ = trainer.predict("test")
    expected = 1 / (1 + np.exp(-logits.numpy().astype(np.float64)))
    split = DEFAULT_TEST_SPLIT
    test_rows = np.flatnonzero(Source([raw], ["train", "valid", "test"], split["ratios"], False,
                                      split["seed"]).assign(0, ROWS, None) == 2)
    for source in (run, export):
        r = predict_file(source, raw, tmp_path / f"{source.name}.csv")
        assert r["rows"] == ROWS
        header, scores = read_scores(tmp_path / f"{source.name}.csv")
        assert header == ["row", "probability"]
        np.testing.assert_array_equal(scores[:, 0], np.arange(ROWS))
        got = scores[test_rows[index.numpy()], 1]
        np.testing.assert_allclose(got, expected, atol=1e-5)


def post(url: str, body: bytes) -> tuple[int, dict]:
    req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def raw_rows(raw: Path, n: int) -> list[dict]:
    """The first n rows of the CSV as JSON objects: numbers as numbers, empty cells left out."""
    with open(raw) as f:
        rows = [r for _, r in zip(range(n), csv.DictReader(f))]
    return [{k: (float(v) if k.startswith("I") else v) for k, v in r.items() if v != "" and k != "label"} for r in rows]


def test_http_server_scores_rows_like_predict(binary, tmp_path) -> None:
    raw, _run, export = binary
    predict_file(export, raw, tmp_path / "p.csv")
    _h, scores = read_scores(tmp_path / "p.csv")
    server = make_server(Scorer.open(export), "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        with urllib.request.urlopen(base + "/health", timeout=30) as resp:
            health = json.loads(resp.read())
        assert health["status"] == "ok" and health["engine"] == "onnx" and "C1" in health["columns"]
        code, body = post(base + "/predict", json.dumps({"rows": raw_rows(raw, 7)}).encode())
        assert code == 200
        np.testing.assert_allclose(body["probabilities"], scores[:7, 1], atol=1e-6)
        assert post(base + "/predict", b'{"rows": []}') == (200, {"probabilities": []})
        # rows as a CSV's strings: numbers as text, empty cells as "" (missing), as predict reads them
        with open(raw) as f:
            text_rows = [{k: v for k, v in r.items() if k != "label"} for _, r in zip(range(7), csv.DictReader(f))]
        assert any(v == "" for r in text_rows for v in r.values())
        # and typed (the fast path): numbers as numbers, missing numbers left out, "" categoricals kept
        typed = [{k: (float(v) if k.startswith("I") else v) for k, v in r.items() if v != "" or k.startswith("C")}
                 for r in text_rows]
        assert any(v == "" for r in typed for v in r.values())
        for rows in (text_rows, typed):
            code, body = post(base + "/predict", json.dumps({"rows": rows}).encode())
            assert code == 200
            np.testing.assert_allclose(body["probabilities"], scores[:7, 1], atol=1e-6)
        code, body = post(base + "/predict", json.dumps({"rows": [{"C1": "x", "C99": "y"}]}).encode())
        assert code == 400 and "unknown column(s) ['C99']" in body["error"]
        code, body = post(base + "/predict", json.dumps({"rows": [{"I1": "many"}]}).encode())
        assert code == 400 and "row 0, column 'I1': 'many' is not a number" in body["error"]
        code, body = post(base + "/predict", b"{not json")
        assert code == 400 and "not JSON" in body["error"]
        assert post(base + "/other", b"{}")[0] == 404
    finally:
        server.shutdown()
        server.server_close()


def test_multiclass_export_and_predict(tmp_path) -> None:
    raw, run = trained(tmp_path, "multiclass", "dnn")
    export_run(run, tmp_path / "export", formats=("torchscript",))  # a TorchScript-only export
    assert Scorer.open(tmp_path / "export").engine == "torchscript"
    r = predict_file(tmp_path / "export", raw, tmp_path / "p.csv")
    header, scores = read_scores(tmp_path / "p.csv")
    classes = Scorer.open(run).classes
    assert r["rows"] == ROWS and header == ["row"] + [f"p_{c}" for c in classes] and len(classes) == 4
    np.testing.assert_allclose(scores[:, 1:].sum(1), 1.0, atol=1e-5)


def test_errors_name_the_fix(binary, tmp_path) -> None:
    _raw, run, export = binary
    with pytest.raises(MtkdError, match="already an export"):
        export_run(export, tmp_path / "again")
    for fmt in ("onnx", "torchscript"):
        with pytest.raises(MtkdError, match=f"{fmt} and PyTorch differ by .* the export was not written"):
            export_run(run, tmp_path / "strict", tol=-1.0, formats=(fmt,))
    with pytest.raises(MtkdError, match="export format.*'pmml'.*choose from onnx, torchscript"):
        export_run(run, tmp_path / "strict", formats=("pmml",))
    assert not (tmp_path / "strict").exists() and not (tmp_path / ".strict.tmp").exists()
    with pytest.raises(MtkdError, match="neither a run directory"):
        Scorer.open(tmp_path)
    with pytest.raises(MtkdError, match="has no torchscript model .* --format torchscript"):
        Scorer.open(tmp_path / "onnx_only", "torchscript") if export_run(run, tmp_path / "onnx_only") else None
    with pytest.raises(MtkdError, match="neither a run directory .* it holds .*onnx_only: pass one of those"):
        Scorer.open(tmp_path)  # the parent of an export
    with pytest.raises(MtkdError, match="no such directory"):
        Scorer.open(tmp_path / "missing")
    bad = tmp_path / "bad.csv"
    bad.write_text("label,foo\n1,2\n")
    with pytest.raises(MtkdError, match="the file lacks"):
        predict_file(export, bad, tmp_path / "out.csv")
    assert not (tmp_path / "out.csv").exists()


def test_export_never_replaces_what_is_not_an_export(binary, tmp_path) -> None:
    """An export replaces its --out as a whole: a folder of other files, the run itself or the
    current directory is refused and left as it was; an earlier export is replaced."""
    raw, run, export = binary
    keep = tmp_path / "precious"
    keep.mkdir()
    (keep / "notes.txt").write_text("x")
    for out in (keep, run, Path(".")):
        with pytest.raises(MtkdError, match=r"--out .*(not an mtkd export|run directory|current directory)"):
            export_run(run, out)
    assert (keep / "notes.txt").read_text() == "x" and (run / "best.pt").exists()
    export_run(run, tmp_path / "e")
    stamp = (tmp_path / "e" / "export.json").stat().st_mtime_ns
    export_run(run, tmp_path / "e")  # an earlier export: replaced
    assert (tmp_path / "e" / "export.json").stat().st_mtime_ns != stamp


def test_non_finite_numbers_and_bad_outputs_are_refused(binary, tmp_path) -> None:
    """inf / NaN would score as NaN (not JSON): a served row is a 400 naming the column, a file's
    row an error naming its line; --out a directory is named, with no temporary file left."""
    raw, _run, export = binary
    scorer = Scorer.open(export)
    col = "I1"
    for bad in ("inf", float("nan"), float("-inf")):
        with pytest.raises(MtkdError, match=f"column '{col}'"):
            scorer.rows_to_batch([{col: bad}])
    missing = scorer.score_batch(scorer.rows_to_batch([{col: None}]))  # a NaN spelt in a string: missing, as in a file
    for spelt in ("NAN", "-nan", "nan"):
        assert scorer.score_batch(scorer.rows_to_batch([{col: spelt}])) == pytest.approx(missing)
    with open(raw) as fh:
        rows = [r for _, r in zip(range(3), csv.reader(fh))]
    rows[2][rows[0].index(col)] = "inf"
    f = tmp_path / "inf.csv"
    with open(f, "w", newline="") as fh:
        csv.writer(fh).writerows(rows)
    with pytest.raises(MtkdError, match=f"line 3, column '{col}'.*not a finite number"):
        predict_file(export, f, tmp_path / "p.csv")
    (tmp_path / "dir").mkdir()
    with pytest.raises(MtkdError, match="is a directory"):
        predict_file(export, raw, tmp_path / "dir")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dir", "inf.csv"]


def test_cli_export_predict(binary, tmp_path, capsys) -> None:
    raw, run, _export = binary
    assert main(["export", str(run), "--out", str(tmp_path / "e"), "--format", "onnx,torchscript"]) == 0
    assert "model.ts (torchscript" in " ".join(capsys.readouterr().out.split())
    assert main(["predict", str(tmp_path / "e"), "--input", str(raw), "--out", str(tmp_path / "p.csv")]) == 0
    assert read_scores(tmp_path / "p.csv")[1].shape == (ROWS, 2)
    assert "rows scored with onnx" in capsys.readouterr().out.replace("\n", " ")


def test_bench_times_both_engines(binary, capsys) -> None:
    from mtkd.serve.bench import scorer_latency

    _raw, run, export = binary
    lat = scorer_latency(Scorer.open(export), (1, 16), repeats=5)
    assert set(lat) == {1, 16} and all(r["p50_ms"] > 0 and r["rows_per_s"] > 0 for r in lat.values())
    assert main(["bench", str(run), str(export), "--batches", "1,8"]) == 0
    text = capsys.readouterr().out
    assert "torch" in text and "onnx" in text and "torchscript" in text  # every format of the export


def test_predict_a_file_without_labels(binary, tmp_path) -> None:
    """New traffic to score has no label column; the scores are those of the labelled file."""
    import pyarrow.csv as pcsv

    raw, _run, export = binary
    unlabelled = tmp_path / "new.csv"
    pcsv.write_csv(pcsv.read_csv(raw).drop_columns(["label"]), unlabelled)
    predict_file(export, raw, tmp_path / "a.csv")
    predict_file(export, unlabelled, tmp_path / "b.csv")
    np.testing.assert_array_equal(read_scores(tmp_path / "a.csv")[1], read_scores(tmp_path / "b.csv")[1])


def test_predict_a_file_missing_a_column_says_to_fix_the_file(binary, tmp_path) -> None:
    """The schema belongs to the model: a scoring file with a renamed column is told to match the
    training columns, not to edit the schema."""
    import pyarrow.csv as pcsv

    from mtkd.errors import DataError

    raw, _run, export = binary
    table = pcsv.read_csv(raw)
    renamed = tmp_path / "renamed.csv"
    pcsv.write_csv(table.rename_columns(["C3x" if c == "C3" else c for c in table.column_names]), renamed)
    with pytest.raises(DataError) as info:
        predict_file(export, renamed, tmp_path / "out.csv")
    msg = str(info.value)
    assert "['C3']" in msg and "columns the model was trained on" in msg and "in the schema" not in msg
    assert not (tmp_path / "out.csv").exists()


def test_concurrent_requests_are_scored_together_and_a_bad_one_fails_alone(binary) -> None:
    """Requests that wait while the scoring thread is busy go through the model as one batch,
    each gets its own rows' probabilities, and a request that breaks the merged batch is
    retried alone so only it fails."""
    from concurrent.futures import ThreadPoolExecutor

    from mtkd.serve.batcher import Batcher

    raw, _run, export = binary
    scorer = Scorer.open(export)
    rows = raw_rows(raw, 40)
    batches = [scorer.rows_to_batch(rows[i:i + n]) for i, n in ((0, 1), (1, 5), (6, 9), (15, 25))]
    expected = [scorer.score_batch(b) for b in batches]
    entered, gate, real = threading.Event(), threading.Event(), scorer.score_batch

    def held(batch):  # while the gate is shut the scoring thread sits in its call: requests queue
        if not gate.is_set():
            entered.set()
            gate.wait(30)
        return real(batch)

    def queued(n: int) -> None:
        while batcher._queue.qsize() < n:
            time.sleep(0.001)

    scorer.score_batch = held
    batcher = Batcher(scorer)
    try:
        with ThreadPoolExecutor(8) as ex:
            first = ex.submit(batcher.score, batches[0])
            assert entered.wait(30)
            rest = [ex.submit(batcher.score, b) for b in batches[1:]]
            queued(3)
            gate.set()
            got = [first.result(30)] + [f.result(30) for f in rest]
            for g, e in zip(got, expected):
                np.testing.assert_allclose(g, e, atol=1e-7)
            assert batcher.calls == 2  # request 0 alone, then the three waiting ones together

            entered.clear()
            gate.clear()
            again = ex.submit(batcher.score, batches[0])
            assert entered.wait(30)
            good = ex.submit(batcher.score, batches[2])
            bad = ex.submit(batcher.score, batches[1].drop_columns(["C3"]))  # no C3: cannot be merged or encoded
            queued(2)
            gate.set()
            np.testing.assert_allclose(again.result(30), expected[0], atol=1e-7)
            np.testing.assert_allclose(good.result(30), expected[2], atol=1e-7)
            with pytest.raises(Exception):
                bad.result(30)
            assert batcher.calls == 2 + 1 + 2  # the pair could not be merged: each was scored alone
    finally:
        batcher.close()


def test_keep_alive_requests_are_not_held_by_nagle(binary) -> None:
    """Headers and body leave in two writes: without TCP_NODELAY every keep-alive request waits
    ~40 ms for the client's delayed ACK. Ten requests on one connection take well under that."""
    import http.client

    raw, _run, export = binary
    server = make_server(Scorer.open(export), "127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        conn = http.client.HTTPConnection("127.0.0.1", server.server_address[1], timeout=30)
        body = json.dumps({"rows": raw_rows(raw, 1)}).encode()
        times = []
        for _ in range(11):
            t0 = time.perf_counter()
            conn.request("POST", "/predict", body, {"Content-Type": "application/json"})
            resp = conn.getresponse()
            assert resp.status == 200 and len(json.loads(resp.read())["probabilities"]) == 1
            times.append(time.perf_counter() - t0)
        assert sorted(times[1:])[4] < 0.030, times  # median of 10 on one connection
    finally:
        server.shutdown()
        server.server_close()


def test_server_answers_broken_requests_and_scoring_failures(binary) -> None:
    """A body that is not UTF-8, a Content-Length that is not a number, and a failure inside
    scoring each get a JSON answer (400 / 400 / 500) instead of a dropped connection."""
    import socket

    raw, _run, export = binary
    scorer = Scorer.open(export)
    server = make_server(scorer, "127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        code, body = post(base + "/predict", b'{"rows": ["\xff\xfe"]}')
        assert code == 400 and "not JSON" in body["error"]
        with socket.create_connection(("127.0.0.1", server.server_address[1]), timeout=30) as sock:
            sock.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: many\r\n\r\n")
            reply = ""
            while not reply.endswith("}"):  # headers and body may come in two segments
                chunk = sock.recv(4096).decode()
                if not chunk:
                    break
                reply += chunk
        assert reply.startswith("HTTP/1.1 400") and "is not a number" in reply
        assert "Connection: close" in reply  # where the body ends is unknown: the connection is not reused
        for head in (b"Content-Length: -1", b"Transfer-Encoding: chunked"):  # answered, not left hanging
            with socket.create_connection(("127.0.0.1", server.server_address[1]), timeout=30) as sock:
                sock.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\n" + head + b"\r\n\r\n")
                reply = ""
                while not reply.endswith("}"):
                    chunk = sock.recv(4096).decode()
                    if not chunk:
                        break
                    reply += chunk
            assert reply.startswith("HTTP/1.1 411") and "Connection: close" in reply, reply

        def broken(batch):
            raise RuntimeError("disk on fire")

        scorer.score_batch = broken
        code, body = post(base + "/predict", json.dumps({"rows": raw_rows(raw, 2)}).encode())
        assert code == 500 and body["error"] == "scoring failed: RuntimeError: disk on fire"
    finally:
        server.shutdown()
        server.server_close()


def test_metrics_endpoint_counts_requests_rows_and_latency(binary) -> None:
    raw, _run, export = binary
    server = make_server(Scorer.open(export), "127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        for n in (3, 5):
            assert post(base + "/predict", json.dumps({"rows": raw_rows(raw, n)}).encode())[0] == 200
        assert post(base + "/predict", json.dumps({"rows": [{"I1": "many"}]}).encode())[0] == 400
        with urllib.request.urlopen(base + "/metrics", timeout=30) as resp:
            assert resp.headers["Content-Type"].startswith("text/plain")
            text = resp.read().decode()
    finally:
        server.shutdown()
        server.server_close()
    values = {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
              if line and not line.startswith("#")}
    assert values['mtkd_requests_total{code="200"}'] == 2 and values['mtkd_requests_total{code="400"}'] == 1
    assert values["mtkd_rows_total"] == 8 and values['mtkd_model_calls_total{engine="onnx"}'] == 2
    assert values['mtkd_request_seconds_bucket{le="+Inf"}'] == values["mtkd_request_seconds_count"] == 3
    buckets = [v for k, v in values.items() if k.startswith("mtkd_request_seconds_bucket")]
    assert buckets == sorted(buckets) and 0 < values["mtkd_request_seconds_sum"] < 30  # cumulative, in seconds


def test_an_export_loads_after_a_schema_hash_change_but_not_with_a_foreign_encoder(binary, tmp_path) -> None:
    """encoder.json and schema.yaml of an export belong together by construction: an mtkd
    version that hashes schemas differently must not strand a model in production, while an
    encoder whose features are not the schema's is refused."""
    import shutil

    _raw, _run, export = binary
    copy = tmp_path / "export"
    shutil.copytree(export, copy)
    state = json.loads((copy / "encoder.json").read_text())
    state["schema_hash"] = "from-an-older-mtkd"
    (copy / "encoder.json").write_text(json.dumps(state))
    arrays = {"cat": np.full((3, 26), 2, np.int32), "num": np.zeros((3, 13), np.float32)}
    np.testing.assert_allclose(Scorer.open(copy).score_arrays(arrays), Scorer.open(export).score_arrays(arrays))
    state["features"]["C99"] = state["features"].pop("C26")
    (copy / "encoder.json").write_text(json.dumps(state))
    with pytest.raises(MtkdError, match="do not match the schema beside it"):
        Scorer.open(copy)


@pytest.mark.parametrize("stop", ["SIGINT", "SIGTERM", "SIGKILL"])
def test_worker_processes_share_one_port(binary, stop: str) -> None:
    """`mtkd serve --workers 2`: two processes answer on one port (new connections reach both),
    each scores like the model, and stopping the parent stops them: Ctrl-C, a process manager's
    SIGTERM, and even SIGKILL of the parent (the kernel tells the workers), none left serving."""
    import signal
    import socket
    import subprocess
    import sys

    raw, _run, export = binary
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "mtkd", "serve", str(export), "--port", str(port), "--workers", "2"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    try:
        pids: set[int] = set()
        deadline = time.time() + 120
        while len(pids) < 2 and time.time() < deadline:
            try:
                with urllib.request.urlopen(base + "/health", timeout=5) as resp:  # a new connection each time
                    pids.add(json.loads(resp.read())["pid"])
            except OSError:
                assert proc.poll() is None, proc.stderr.read().decode()
                time.sleep(0.2)
        assert len(pids) == 2 and proc.pid not in pids
        from mtkd.serve.server import check_port_free

        with pytest.raises(MtkdError, match="Address already in use"):  # a second service may not share it
            check_port_free("127.0.0.1", port)
        rows = raw_rows(raw, 4)
        want = Scorer.open(export).score_batch(Scorer.open(export).rows_to_batch(rows))
        for _ in range(4):
            code, body = post(base + "/predict", json.dumps({"rows": rows}).encode())
            assert code == 200
            np.testing.assert_allclose(body["probabilities"], want, atol=1e-6)
    finally:
        proc.send_signal(getattr(signal, stop))
        rc = proc.wait(timeout=60)
    assert rc == (-signal.SIGKILL if stop == "SIGKILL" else 0), proc.stderr.read().decode()
    deadline = time.time() + 30
    while time.time() < deadline and any(os.path.exists(f"/proc/{pid}") for pid in pids):
        time.sleep(0.1)
    for pid in pids:  # the workers are gone too
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_rows_may_carry_the_training_files_other_columns(tmp_path) -> None:
    """A served row straight from the log the model was trained on keeps its columns that the
    schema does not use (Avazu's `id`): accepted and ignored, as `mtkd predict` reads such a file,
    in a run and in its export. A column the training files never had is still an error."""
    write_synthetic(tmp_path / "s.csv", 600, seed=1)
    with open(tmp_path / "s.csv") as f, open(tmp_path / "raw.csv", "w", newline="") as g:
        rows = list(csv.DictReader(f))
        w = csv.DictWriter(g, ["id", *rows[0]])
        w.writeheader()
        w.writerows({"id": str(10_000 + i), **r} for i, r in enumerate(rows))
    manifest = prepare(load_schema(REPO / "configs/datasets/synthetic.yaml"), tmp_path / "ds", tmp_path / "raw.csv")
    assert manifest["source_columns"][:2] == ["id", "label"]
    cfg = load_train_config(None, ["batch_size=256", "epochs=1", "device=cpu"], model="lr")
    train_run(cfg, tmp_path / "ds", tmp_path / "run", **QUIET)
    export_run(tmp_path / "run", tmp_path / "export")
    sent = [{k: v for k, v in r.items() if k != "label"} for r in rows[:5]]
    for source in (tmp_path / "run", tmp_path / "export"):
        scorer = Scorer.open(source)
        with_id = scorer.score_batch(scorer.rows_to_batch([{"id": str(i), **r} for i, r in enumerate(sent)]))
        np.testing.assert_array_equal(with_id, scorer.score_batch(scorer.rows_to_batch(sent)))
        with pytest.raises(MtkdError, match=r"row 0: unknown column\(s\) \['idd'\]"):
            scorer.rows_to_batch([{"idd": "1", **sent[0]}])
