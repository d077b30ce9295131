"""Every model and the training loop on a device: the GPU check to run when a GPU is lent.

    .venv/bin/python benchmarks/device_check.py                     # --device cuda (the point of it)
    .venv/bin/python benchmarks/device_check.py --device cpu        # the same code path here (a dry run)

For each model of the zoo, on a synthetic Criteo-shaped dataset it writes itself (default 20k rows;
the text models on SST-2-shaped sentences, DIN on clicks with an item history, a quarter as many):
  1. the same weights on CPU and on the device, eval mode, one 4,096-row batch: the largest
     |logit difference| (TF32 is off, so fp32 on both sides; a few 1e-5 is float reordering);
  2. one epoch of `mtkd train` on the device (`data_on_device: true`: the split lives on the
     device and batches are gathered there), its training samples/s and valid AUC.
Then the issue's GPU bar: DNN, DeepFM and DCN (embedding 16, MLP 400-400-400, batch 4096) for two
epochs each with data on the device, training samples/s as the trainer measures it (synchronised),
beside a plain PyTorch DNN of the same shape timed in the same process (one embedding table with
field offsets, fused Adam, data on the device): the bar mtkd's loop is measured against.
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

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from mtkd.config import load_train_config  # noqa: E402
from mtkd.data.loader import BatchLoader  # noqa: E402
from mtkd.data.prepare import prepare  # noqa: E402
from mtkd.data.schema import load_schema, schema_from_dict  # noqa: E402
from mtkd.data.store import Dataset  # noqa: E402
from mtkd.data.synthetic import write_synthetic  # noqa: E402
from mtkd.errors import ConfigError  # noqa: E402
from mtkd.models import MODELS, build_model, model_params  # noqa: E402
from mtkd.train.run import train_run  # noqa: E402


def write_history_clicks(path: Path, rows: int, seed: int) -> None:
    """Rows for DIN: a click when the candidate item is among the user's last five items."""
    rng = np.random.default_rng(seed)
    hist = np.argsort(rng.random((rows, 60)), axis=1)[:, :5]
    click = rng.random(rows) < 0.5
    item = np.where(click, hist[np.arange(rows), rng.integers(0, 5, rows)], rng.integers(0, 60, rows))
    click = (hist == item[:, None]).any(axis=1)
    lines = ["label,user,item,history"] + [
        f"{int(c)},u{u},i{i},{'|'.join(f'i{x}' for x in h)}"
        for c, u, i, h in zip(click, rng.integers(0, 100, rows), item, hist)]
    path.write_text("\n".join(lines) + "\n")


def write_sentences(path: Path, rows: int, seed: int) -> None:
    """SST-2-shaped rows for the text models: positive when "good" comes before "bad"."""
    rng = np.random.default_rng(seed)
    words = np.array([f"w{i}" for i in range(40)] + ["good", "bad"])
    toks = words[rng.integers(0, 40, (rows, 8))]
    first, second = rng.integers(0, 4, rows), rng.integers(4, 8, rows)
    pos = rng.random(rows) < 0.5
    toks[np.arange(rows), first] = np.where(pos, "good", "bad")
    toks[np.arange(rows), second] = np.where(pos, "bad", "good")
    path.write_text("sentence\tlabel\n" + "".join(f"{' '.join(t)}\t{int(p)}\n" for t, p in zip(toks, pos)))


def datasets(root: Path, rows: int) -> dict[str, Path]:
    """Criteo-shaped rows for the CTR zoo, and the data DIN (a history) and the text models need."""
    write_synthetic(root / "s.csv", rows, seed=1)
    prepare(load_schema(REPO / "configs" / "datasets" / "synthetic.yaml"), root / "ctr", root / "s.csv")
    write_history_clicks(root / "h.csv", max(rows // 4, 2000), seed=1)
    prepare(schema_from_dict({"label": "label", "split": {"ratios": [0.8, 0.1, 0.1]}, "features": [
        {"names": ["user", "item"], "type": "categorical"},
        {"name": "history", "type": "sequence", "max_len": 8, "share_embedding": "item"}]}),
        root / "history", root / "h.csv")
    write_sentences(root / "t.tsv", max(rows // 4, 2000), seed=1)
    prepare(load_schema(REPO / "configs" / "datasets" / "sst2.yaml"), root / "text", root / "t.tsv", ratios=[0.8, 0.1, 0.1])
    return {"ctr": root / "ctr", "text": root / "text", "history": root / "history"}  # the order data_for tries


def data_for(name: str, data: dict[str, Path]) -> tuple[str, Dataset] | tuple[None, str]:
    """The first dataset the model builds on (CTR, text, history), or why none."""
    why = ""
    for kind, path in data.items():
        ds = Dataset(path)
        try:
            build_model(name, ds.feature_map, **emb16(name))
            return kind, ds
        except ConfigError as e:
            why = why or str(e).split(";")[0]
    return None, why


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


def plain_dnn_sps(device: torch.device, rows: int, vocab: int = 10_000, steps: int = 60) -> float:
    """Training samples/s of a hand-written PyTorch DNN (26 fields x embedding 16 plus 13 numeric
    inputs, MLP 400-400-400, Adam, batch 4096) on batches already on the device."""
    torch.manual_seed(0)
    fields, dim, batch = 26, 16, 4096
    emb = torch.nn.Embedding(fields * vocab, dim).to(device)
    layers: list[torch.nn.Module] = []
    width = fields * dim + 13
    for h in (400, 400, 400):
        layers += [torch.nn.Linear(width, h), torch.nn.ReLU()]
        width = h
    mlp = torch.nn.Sequential(*layers, torch.nn.Linear(width, 1)).to(device)
    params = [*emb.parameters(), *mlp.parameters()]
    opt = torch.optim.Adam(params, lr=1e-3, fused=device.type == "cuda")
    ids = torch.randint(0, vocab, (rows, fields), device=device) + torch.arange(fields, device=device) * vocab
    num = torch.randn(rows, 13, device=device)
    y = (torch.rand(rows, device=device) < 0.25).float()

    def step(i: int) -> None:
        sl = slice((i * batch) % (rows - batch), (i * batch) % (rows - batch) + batch)
        x = torch.cat([emb(ids[sl]).flatten(1), num[sl]], 1)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(mlp(x).squeeze(1), y[sl])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for i in range(5):  # warm-up: allocator, kernels, Adam's moments
        step(i)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    for i in range(steps):
        step(i)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return steps * batch / (time.perf_counter() - t0)


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
    failures: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        data = datasets(root, args.rows)
        name_of = torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu"
        print(f"device_check: torch {torch.__version__}, device {args.device} ({name_of}), {args.rows:,} "
              "Criteo-shaped rows (DIN: user-item clicks with a history; text models: SST-2-shaped sentences)")
        print("| model | data | max abs logit diff CPU vs device | train samples/s (1 epoch, batch 1024) "
              "| valid AUC | wall s |")
        print("|---|---|---:|---:|---:|---:|")
        for m in models:
            kind, ds = data_for(m, data)
            if kind is None:
                failures.append(m)
                print(f"| {m} | none: {ds} | FAIL | | | |", flush=True)
                continue
            gap = logit_gap(m, ds, device)
            r = train_one(m, data[kind], root / "runs" / m, args.device,
                          ["epochs=1", "batch_size=1024", *(f"params.{k}={v}" for k, v in emb16(m).items())])
            ok = gap <= args.tol and math.isfinite(r["auc"])
            if not ok:
                failures.append(m)
            print(f"| {m} | {kind} | {gap:.2e}{'' if ok else ' FAIL'} | {r['sps']:,.0f} | {r['auc']:.4f} "
                  f"| {r['wall']:.1f} |", flush=True)
        if args.bar_rows:
            write_synthetic(root / "bar.csv", args.bar_rows, seed=2)
            prepare(load_schema(REPO / "configs" / "datasets" / "synthetic.yaml"), root / "bar", root / "bar.csv")
            plain = plain_dnn_sps(device, args.bar_rows)
            print(f"\nThe GPU bar: embedding 16, MLP 400-400-400, batch 4096, data on the device, {args.bar_rows:,} rows; "
                  "mtkd: the best of 2 epochs of `mtkd train`")
            print("| model | mtkd train samples/s | plain PyTorch DNN samples/s | mtkd / plain | valid AUC |")
            print("|---|---:|---:|---:|---:|")
            for m in ("dnn", "deepfm", "dcn"):
                r = train_one(m, root / "bar", root / "runs" / f"bar-{m}", args.device,
                              ["epochs=2", "batch_size=4096", "patience=5", "params.embedding_dim=16",
                               "params.hidden_units=[400,400,400]"])
                print(f"| {m} | {r['sps']:,.0f} | {plain:,.0f} | {r['sps'] / plain:.2f} | {r['auc']:.4f} |", flush=True)
            print("(plain PyTorch's DNN reaches about 1.5M samples/s on an H200)")
    if failures:
        print(f"FAIL: {', '.join(failures)}")
        sys.exit(1)


if __name__ == "__main__":
    main()
