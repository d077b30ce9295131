"""Export a trained run to ONNX, with the encoder beside it and a parity check against PyTorch.

The export directory is self-contained: `model.onnx` (inputs `cat` int64 [B, n_cat], `num`
float32 [B, n_num], `seq_<name>` int64 [B, max_len] as the schema has them; output
`probability`, [B] or [B, C]; the batch dimension is dynamic), `encoder.json` and `schema.yaml`
(so `mtkd predict` / `mtkd serve` encode raw rows exactly as training did) and `export.json`
(what was exported, and the parity measured). The parity check scores real validation rows with
PyTorch and with ONNX Runtime and refuses the export if they differ by more than `tol`. Files are
written into a temporary directory that replaces the target only when everything succeeded.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mtkd.serve.bench import first_rows
from mtkd.errors import MtkdError
from mtkd.serve.scorer import EXPORT_FILE, ProbabilityHead, Scorer, batch_arrays, input_names, model_inputs, onnx_name

PARITY_ROWS = 4096


def split_arrays(dataset: Any, split: str, rows: int) -> dict[str, np.ndarray]:
    """The first `rows` encoded rows of a split, as the scorer's input arrays."""
    return batch_arrays(first_rows(dataset, split, rows))


def export_onnx(run: str | Path, out: str | Path | None = None, tol: float = 1e-4) -> dict[str, Any]:
    """Export `run`'s best weights to `out` (default RUN/export); returns what export.json holds."""
    run = Path(run)
    out = Path(out) if out is not None else run / "export"
    torch_scorer = Scorer.open(run)
    if torch_scorer.engine != "torch":
        raise MtkdError(f"{run}: is already an export; point `mtkd export` at a run directory")
    dataset = torch_scorer.dataset
    names = input_names(torch_scorer.schema)
    head: ProbabilityHead = torch_scorer.head  # type: ignore[assignment]
    split = "valid" if "valid" in dataset.split_names else dataset.split_names[0]
    sample = split_arrays(dataset, split, PARITY_ROWS)
    example = tuple(torch.from_numpy(a[:8]) for a in model_inputs(sample, names).values())
    batch = torch.export.Dim("batch")
    tmp = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    t0 = time.perf_counter()
    try:
        with warnings.catch_warnings():  # the exporter narrates its internals through warnings and logs
            warnings.simplefilter("ignore")
            logging.getLogger("torch.onnx").setLevel(logging.ERROR)
            torch.onnx.export(head, example, str(tmp / EXPORT_FILE), input_names=[onnx_name(n) for n in names],
                              output_names=["probability"],
                              dynamic_shapes=(tuple({0: batch} for _ in names),), dynamo=True, verbose=False)
    except Exception as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise MtkdError(f"{run}: ONNX export failed ({type(e).__name__}: ...{str(e)[-800:]})") from None
    seconds = time.perf_counter() - t0
    root = dataset.root
    shutil.copyfile(root / "encoder.json", tmp / "encoder.json")
    shutil.copyfile(root / "schema.yaml", tmp / "schema.yaml")
    onnx_scorer = Scorer.open(tmp)
    ref, got = torch_scorer.score_arrays(sample), onnx_scorer.score_arrays(sample)
    gap = float(np.abs(ref - got).max())
    if not gap <= tol:
        shutil.rmtree(tmp, ignore_errors=True)
        raise MtkdError(f"{run}: ONNX Runtime and PyTorch differ by {gap:.2e} on {len(ref)} {split} rows "
                        f"(tolerance {tol:g}); the export was not written")
    meta = {"run": str(run.resolve()), "model": torch_scorer.model_name, "dataset_checksum": dataset.checksum,
            "task": torch_scorer.schema.task, "inputs": [onnx_name(n) for n in names], "output": "probability",
            "parity": {"rows": int(len(ref)), "split": split, "max_abs_diff": gap, "tolerance": tol},
            "export_seconds": round(seconds, 2), "onnx_bytes": sum(f.stat().st_size for f in tmp.glob(EXPORT_FILE + "*"))}
    (tmp / "export.json").write_text(json.dumps(meta, indent=1))
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    return meta
