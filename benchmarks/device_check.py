"""Every model and the training loop on a device: the GPU check to run when a GPU is lent.

    .venv/bin/python benchmarks/device_check.py                     # --device cuda (the point of it)
    .venv/bin/python benchmarks/device_check.py --device cpu        # the same code path here (a dry run)

For each model of the zoo, on a synthetic Criteo-shaped dataset it writes itself (default 20k rows):
  1. the same weights on CPU and on the device, eval mode, one 4,096-row batch: the largest
     |logit difference| (TF32 is off, so fp32 on both sides; a few 1e-5 is float reordering);
  2. one epoch of `mtkd train` on the device (`data_on_device: true`: the split lives on the
     device and batches are gathered there), its training samples/s and valid AUC.
Then the DNN of the issue's GPU bar (embedding 16, MLP 400-400-400, batch 4096) for two epochs
on the device with data on the device: training samples/s as the trainer measures it.
Prints one table; exit status 1 when a logit differs by more than --tol or a run is not finite.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from mtkd.config import load_train_config  # noqa: E402
from mtkd.data.loader import BatchLoader  # noqa: E402
from mtkd.data.prepare import prepare  # noqa: E402
from mtkd.data.schema import load_schema  # noqa: E402
from mtkd.data.store import Dataset  # noqa: E402
from mtkd.data.synthetic import write_synthetic  # noqa: E402
from mtkd.models import MODELS, build_model, model_params  # noqa: E402
from mtkd.train.run import train_run  # noqa: E402


def emb16(name: str) -> dict:
    """Embedding 16 for every model that has an embedding size (LR has none)."""
    return {"embedding_dim": 16} if "embedding_dim" in model_params(name) else {}


def logit_gap(name: str, ds: Dataset, device: torch.device) -> float:
    """Largest |logit difference| between CPU and `device` for the same weights and rows."""
    torch.manual_seed(0)
    model = build_model(name, ds.feature_map, **emb16(name)).eval()
    batch = next(iter(BatchLoader(ds, "valid", 4096, shuffle=False)))
    with torch.no_grad():
        ref = model(batch).logits
        out = model.to(device)(batch.to(device)).logits.cpu()
    return float((ref - out).abs().max())


def train_one(name: str, data: Path, out: Path, device: str, sets: list[str]) -> dict:
    cfg = load_train_config(None, [f"device={device}", "data_on_device=true", *sets], model=name)
    t0 = time.perf_counter()
    s = train_run(cfg, data, out, force=True, progress=False, log=lambda _m: None)
    lines = (out / "metrics.jsonl").read_text().splitlines()
    sps = max(json.loads(line)["train.samples_per_s"] for line in lines)
    return {"auc": s["valid"]["auc"], "sps": sps, "wall": time.perf_counter() - t0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    ap.add_argument("--rows", type=int, default=20_000)
    ap.add_argument("--models", default="all")
    ap.add_argument("--tol", type=float, default=1e-3, help="largest allowed |logit difference| CPU vs device")
    ap.add_argument("--bar-rows", type=int, default=400_000, help="rows of the DNN speed check (0 skips it)")
    args = ap.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA device here; run with --device cpu for a dry run of the same code")
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    device = torch.device(args.device)
    models = list(MODELS) if args.models == "all" else args.models.split(",")
    schema = load_schema(REPO / "configs" / "datasets" / "synthetic.yaml")
    failures: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_synthetic(root / "s.csv", args.rows, seed=1)
        prepare(schema, root / "ds", root / "s.csv")
        ds = Dataset(root / "ds")
        name_of = torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu"
        print(f"device_check: torch {torch.__version__}, device {args.device} ({name_of}), {args.rows:,} rows")
        print("| model | max abs logit diff CPU vs device | train samples/s (1 epoch, batch 1024) | valid AUC | wall s |")
        print("|---|---:|---:|---:|---:|")
        for m in models:
            gap = logit_gap(m, ds, device)
            r = train_one(m, root / "ds", root / "runs" / m, args.device,
                          ["epochs=1", "batch_size=1024", *(f"params.{k}={v}" for k, v in emb16(m).items())])
            ok = gap <= args.tol and math.isfinite(r["auc"])
            if not ok:
                failures.append(m)
            print(f"| {m} | {gap:.2e}{'' if ok else ' FAIL'} | {r['sps']:,.0f} | {r['auc']:.4f} | {r['wall']:.1f} |",
                  flush=True)
        if args.bar_rows:
            write_synthetic(root / "bar.csv", args.bar_rows, seed=2)
            prepare(schema, root / "bar", root / "bar.csv")
            r = train_one("dnn", root / "bar", root / "runs" / "bar", args.device,
                          ["epochs=2", "batch_size=4096", "patience=5", "params.embedding_dim=16",
                           "params.hidden_units=[400,400,400]"])
            print(f"\nDNN (embedding 16, MLP 400-400-400, batch 4096, data on the device), best epoch of 2: "
                  f"{r['sps']:,.0f} samples/s (plain PyTorch's bar on an H200: ~1.5M); valid AUC {r['auc']:.4f}")
    if failures:
        print(f"FAIL: {', '.join(failures)}")
        sys.exit(1)


if __name__ == "__main__":
    main()
