"""`mtkd predict`: a raw file in, one probability per row out (CSV), with the training encoder.

The input has the columns of the files the model was trained on (same schema: format, header,
column names), with or without the label column (its values are not read). It is read in blocks and scored block by block,
so a file larger than memory streams through. Output: `row` (0-based data row of the input) and
`probability` (binary), or one `p_<class>` column per class (multi-class); Parquet for
`NAME.parquet`. Written to a temporary file and renamed, so an interrupted run leaves no
half-written output; `-` streams the CSV to standard output instead.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq

from mtkd.data.value_checks import OutOfRange
from mtkd.data.prepare import check_finite
from mtkd.data.readers import open_reader
from mtkd.errors import MtkdError
from mtkd.serve.scorer import Scorer


def predict_file(model: str | Path, input_path: str | Path, out_path: str | Path,
                 data: str | Path | None = None) -> dict[str, Any]:
    """Score every row of `input_path` with a run or an export (`data`: a run's moved dataset);
    returns rows, seconds and rows/s."""
    scorer = Scorer.open(model, data=data)
    reader = open_reader(input_path, scorer.schema, need_label=False)
    if str(out_path) == "-":
        return _to_stdout(scorer, reader)
    out_path = _target(Path(out_path), Path(input_path))
    _outside_model(out_path, Path(model), scorer.dataset)
    try:
        out_path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise MtkdError(f"--out {out_path}: cannot create its directory ({e.strerror}); choose a writable path") \
            from None
    tmp = out_path.with_name(f".{out_path.name}.tmp")
    parquet = out_path.suffix.lower() == ".parquet"  # else CSV, whatever the name
    writer, rows, t0 = None, 0, time.perf_counter()
    try:
        for table in _scores(scorer, reader):
            if writer is None:
                try:
                    writer = (pq.ParquetWriter(str(tmp), table.schema) if parquet else
                              pcsv.CSVWriter(str(tmp), table.schema))
                except OSError as e:
                    raise MtkdError(f"--out {out_path}: cannot be written ({e}); choose a writable path") from None
            writer.write_table(table)
            rows += table.num_rows
    except BaseException:
        if writer is not None:
            writer.close()
        tmp.unlink(missing_ok=True)
        raise
    writer.close()
    os.replace(tmp, out_path)
    return _result(scorer, rows, t0, str(out_path))


def _scores(scorer: Scorer, reader: Any):
    """One table of scores (`row`, then `probability` or `p_<class>`) per block of the input; a
    file of no rows gives one empty table, so a day without traffic is a file with its header."""
    rows = 0
    for batch in reader.batches():
        check_finite(reader, batch, rows, scorer.schema)  # inf would score as NaN
        try:
            p = scorer.score_batch(batch)
        except OutOfRange as e:  # past float32 once transformed: named by its line
            raise e.at(reader, rows) from None
        cols: dict[str, Any] = {"row": pa.array(np.arange(rows, rows + len(p), dtype=np.int64))}
        if p.ndim == 1:
            cols["probability"] = pa.array(p.astype(np.float64))
        else:
            for j, c in enumerate(scorer.classes or range(p.shape[1])):
                cols[f"p_{c}"] = pa.array(p[:, j].astype(np.float64))
        rows += len(p)
        yield pa.table(cols)
    if rows == 0:
        names = ["probability"] if scorer.binary else [f"p_{c}" for c in scorer.classes]
        yield pa.table({"row": pa.array([], pa.int64()), **{n: pa.array([], pa.float64()) for n in names}})


def _result(scorer: Scorer, rows: int, t0: float, out: str) -> dict[str, Any]:
    seconds = time.perf_counter() - t0
    return {"rows": rows, "seconds": round(seconds, 3), "rows_per_s": rows / max(seconds, 1e-9),
            "engine": scorer.engine, "out": out}


def _to_stdout(scorer: Scorer, reader: Any) -> dict[str, Any]:
    """`--out -`: the CSV streamed to standard output (a pipe, a device, `> file`); not atomic,
    as nothing in a stream can be taken back."""
    sink, writer, rows, t0 = sys.stdout.buffer, None, 0, time.perf_counter()
    sys.stdout.flush()
    try:
        for table in _scores(scorer, reader):
            writer = writer or pcsv.CSVWriter(sink, table.schema)
            writer.write_table(table)
            rows += table.num_rows
        writer.close()
        sink.flush()
    except BrokenPipeError:  # `| head`: the reader left; stdout goes nowhere from here (no error at exit)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        raise MtkdError("--out -: the standard output was closed by its reader (`| head`?) before every row "
                        "was written") from None
    return _result(scorer, rows, t0, "-")


# what mtkd writes into runs, exports and datasets (weights, arrays, configs, metrics, ONNX and its data)
_MODEL_SUFFIXES = {".pt", ".npy", ".npz", ".json", ".jsonl", ".yaml", ".yml", ".onnx", ".data", ".ts", ".log"}


def _outside_model(target: Path, model: Path, dataset: Any) -> None:
    """The scores never replace a file of the run or export being scored, or of its dataset:
    `--out RUN/best.pt` replaced the weights it was computed with. A scores file there (new, or
    an earlier one: any name but those of the files mtkd writes into runs, exports and datasets)
    is fine."""
    homes = [("the model being scored", model)]
    if dataset is not None:
        homes.append(("the model's dataset", Path(dataset.root)))
    where = target.resolve()
    for what, home in homes:
        inside = home.resolve() in where.parents
        if inside and where.exists() and (where.suffix.lower() in _MODEL_SUFFIXES or "teachers" in where.parts):
            raise MtkdError(f"--out {target}: is a file of {home}, {what}; the scores would replace it, "
                            "so name a new file, e.g. --out scores.csv")


def _target(out_path: Path, input_path: Path) -> Path:
    """The regular file the scores replace: never the input (its rows would be lost), a symlink's
    target rather than the link, and never a directory, FIFO or device (the atomic rename would
    put a plain file in place of /dev/stdout or a pipe)."""
    if out_path.exists() and input_path.exists() and os.path.samefile(out_path, input_path):
        raise MtkdError(f"--out {out_path}: is the --input file; the scores would replace the rows they score, "
                        "so name another file, e.g. --out scores.csv")
    stream = "; `--out -` writes the CSV to standard output (`--out - > PIPE`, `--out - | gzip > F.gz`)"
    if out_path.is_symlink() and str(out_path.absolute()).startswith(("/dev/", "/proc/")):  # /dev/stdout, /dev/fd/N
        raise MtkdError(f"--out {out_path}: is a link to a file descriptor or device, which the scores would "
                        f"replace{stream}")
    target = out_path.resolve() if out_path.is_symlink() else out_path
    if target.is_dir():
        raise MtkdError(f"--out {out_path}: is a directory; name the CSV file to write, e.g. {out_path}/scores.csv")
    if target.exists() and not target.is_file():
        raise MtkdError(f"--out {out_path}: is not a regular file (a pipe or device); the scores are written to a "
                        f"temporary file and renamed into place, which would replace it{stream}")
    return target
