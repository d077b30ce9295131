"""Export a trained run to ONNX and/or TorchScript, with the encoder beside it and a parity
check against PyTorch.

The export directory is self-contained: `model.onnx` (inputs `cat` int64 [B, n_cat], `num`
float32 [B, n_num], `seq_<name>` int64 [B, max_len] as the schema has them; output
`probability`, [B] or [B, C]; the batch dimension is dynamic), `model.ts` (TorchScript: the
same inputs as positional tensors in that order, the same output), `encoder.json` and
`schema.yaml` (so `mtkd predict` / `mtkd serve` encode raw rows exactly as training did) and
`export.json` (what was exported, and the parity measured). The parity check scores real
validation rows with PyTorch and with each exported format (ONNX Runtime, the loaded TorchScript
module) and refuses the export if they differ by more than `tol`. Files are written into a
temporary directory that replaces the target only when everything succeeded.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from mtkd.data.atomic import exclusive, replace_dir, sweep_partials
from mtkd.errors import MtkdError
from mtkd.serve.bench import first_rows
from mtkd.serve.scorer import ONNX_FILE, TORCHSCRIPT_FILE, Scorer, batch_arrays, input_names, model_inputs, onnx_name
from mtkd.train.checkpoint import file_digest

PARITY_ROWS = 4096
ONNX_INLINE_BYTES = 1_800_000_000  # under protobuf's 2 GiB message limit, with room for the graph


def split_arrays(dataset: Any, split: str, rows: int) -> dict[str, np.ndarray]:
    """The first `rows` encoded rows of a split, as the scorer's input arrays."""
    return batch_arrays(first_rows(dataset, split, rows))


FORMATS = {"onnx": ONNX_FILE, "torchscript": TORCHSCRIPT_FILE}


def _check_out(run: Path, out: Path) -> None:
    """An export replaces its directory as a whole: only a missing or empty one, or an earlier
    export (export.json), may be replaced, never a run or a folder of other files."""
    if out == run or out in run.parents:
        raise MtkdError(f"--out {out}: is the run directory (or holds it); the export replaces --out as a "
                        "whole, so name a new directory, e.g. --out exports/NAME")
    if out == Path.cwd().resolve() or out in Path.cwd().resolve().parents:
        raise MtkdError(f"--out {out}: is the current directory (or holds it); name a new directory, "
                        "e.g. --out exports/NAME")
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / "export.json").exists())):
        raise MtkdError(f"--out {out}: exists and is not an mtkd export (no export.json); the export would "
                        "replace it as a whole, so choose another --out or move its files away")


def export_run(run: str | Path, out: str | Path | None = None, tol: float = 1e-4,
               formats: tuple[str, ...] = ("onnx",), data: str | Path | None = None,
               log: Callable[[str], None] = lambda s: None) -> dict[str, Any]:
    """Export `run`'s best weights to `out` (default RUN/export) in each of `formats`; returns
    what export.json holds. Every format must match PyTorch on validation rows within `tol`."""
    run = Path(run)
    out = (Path(out) if out is not None else run / "export").resolve()  # `--out .` has no name to build on
    _check_out(run.resolve(), out)
    unknown = sorted(set(formats) - set(FORMATS))
    if unknown or not formats:
        raise MtkdError(f"export format(s) {unknown or '(none)'}: choose from {', '.join(FORMATS)}")
    with exclusive(out.parent, out.name, log=log):  # a second export to the same --out waits for this one
        return _export(run, out, tol, formats, data)


def _export(run: Path, out: Path, tol: float, formats: tuple[str, ...], data: str | Path | None) -> dict[str, Any]:
    torch_scorer = Scorer.open(run, data=data)
    if torch_scorer.engine != "torch":
        raise MtkdError(f"{run}: is already an export; point `mtkd export` at a run directory")
    dataset = torch_scorer.dataset
    names = input_names(torch_scorer.schema)
    split = "valid" if "valid" in dataset.split_names else dataset.split_names[0]
    sample = split_arrays(dataset, split, PARITY_ROWS)
    example = tuple(torch.from_numpy(a[:8]) for a in model_inputs(sample, names).values())
    tmp = out.with_name(f".{out.name}.partial-{os.getpid()}")  # this process's own: a peer never deletes it
    sweep_partials(out.parent, out.name)  # a killed export's partial goes; one cut off between renames returns
    shutil.rmtree(out.with_name(f".{out.name}.tmp"), ignore_errors=True)  # a killed export left it before exports took turns
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    shutil.copyfile(dataset.root / "encoder.json", tmp / "encoder.json")
    shutil.copyfile(dataset.root / "schema.yaml", tmp / "schema.yaml")
    ref = torch_scorer.score_arrays(sample)
    done: dict[str, Any] = {}
    try:
        for fmt in formats:
            t0 = time.perf_counter()
            try:
                WRITERS[fmt](torch_scorer.head, example, names, tmp / FORMATS[fmt])
            except MtkdError as e:
                raise MtkdError(f"{run}: {e}") from None
            seconds = time.perf_counter() - t0
            gap = float(np.abs(ref - Scorer.open(tmp, engine=fmt).score_arrays(sample)).max())
            if not gap <= tol:
                raise MtkdError(f"{run}: {fmt} and PyTorch differ by {gap:.2e} on {len(ref)} {split} rows "
                                f"(tolerance {tol:g}); the export was not written")
            done[fmt] = {"file": FORMATS[fmt], "bytes": sum(f.stat().st_size for f in tmp.glob(FORMATS[fmt] + "*")),
                         "seconds": round(seconds, 2),
                         "parity": {"rows": int(len(ref)), "split": split, "max_abs_diff": gap, "tolerance": tol}}
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    worst = max(done.values(), key=lambda d: d["parity"]["max_abs_diff"])
    meta = {"run": str(run.resolve()), "weights": file_digest(run / "best.pt"),
            "model": torch_scorer.model_name, "dataset_checksum": dataset.checksum,
            "task": torch_scorer.schema.task, "inputs": [onnx_name(n) for n in names], "output": "probability",
            "formats": done, "parity": worst["parity"],
            "source_columns": dataset.manifest.get("source_columns", [])}
    (tmp / "export.json").write_text(json.dumps(meta, indent=1))
    replace_dir(tmp, out)  # the old export stays until the new one is complete
    return meta


def write_onnx(head: torch.nn.Module, example: tuple[torch.Tensor, ...], names: list[str], path: Path) -> None:
    """ONNX through torch's dynamo exporter, with a dynamic batch dimension. The weights go inside
    model.onnx (one file to copy) unless they pass protobuf's 2 GB limit, when they are written
    beside it as model.onnx.data (the exporter's default for any size)."""
    batch = torch.export.Dim("batch")
    weight_bytes = sum(t.numel() * t.element_size() for t in list(head.parameters()) + list(head.buffers()))
    try:
        with warnings.catch_warnings():  # the exporter narrates its internals through warnings and logs
            warnings.simplefilter("ignore")
            logging.getLogger("torch.onnx").setLevel(logging.ERROR)
            torch.onnx.export(head, example, str(path), input_names=[onnx_name(n) for n in names],
                              output_names=["probability"],
                              dynamic_shapes=(tuple({0: batch} for _ in names),), dynamo=True, verbose=False,
                              external_data=weight_bytes > ONNX_INLINE_BYTES)
    except Exception as e:
        raise MtkdError(f"ONNX export failed ({type(e).__name__}: ...{str(e)[-800:]})") from None


def write_torchscript(head: torch.nn.Module, example: tuple[torch.Tensor, ...], names: list[str], path: Path) -> None:
    """TorchScript by tracing, loadable without Python (`torch::jit::load` in libtorch). Torch
    marks tracing deprecated in favour of torch.export; it still is what a C++ server loads
    without a compiler. The parity check on 4,096 rows (the trace saw 8) catches a frozen shape."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            traced = torch.jit.trace(head, example, check_trace=False)
        traced.save(str(path))
    except Exception as e:
        raise MtkdError(f"TorchScript export failed ({type(e).__name__}: ...{str(e)[-800:]})") from None


WRITERS = {"onnx": write_onnx, "torchscript": write_torchscript}
