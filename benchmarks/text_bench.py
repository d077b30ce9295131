"""Text classification on GLUE SST-2: text encoders as teachers, a bag-of-words DNN as student.

    .venv/bin/python benchmarks/text_bench.py --workdir /tmp/textb [--seeds 2026,2027,2028]

Prepares SST-2 from ../shared/data/glue (train.tsv re-split 90/10 into train/valid; dev.tsv,
872 labelled sentences, is the test split), then per seed trains two text CNN teachers (Kim's
widths 3-4-5, and a 1-2-3 variant), the plain DNN student, and DNN students distilled from both
teachers with averaging, the gate and reinforced selection. Prints test accuracy (GLUE's SST-2
metric), AUC and logloss as mean ± std over seeds, with parameters and CPU milliseconds per
1,000 test rows. The valid split holds SST-2's phrases, the test split whole sentences, so valid
numbers run higher than test ones.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from mtkd.config import load_train_config  # noqa: E402
from mtkd.data.prepare import prepare  # noqa: E402
from mtkd.data.schema import load_schema  # noqa: E402
from mtkd.serve.bench import batch_latency_ms, first_rows  # noqa: E402
from mtkd.train.objectives import Supervised  # noqa: E402
from mtkd.train.run import load_run, train_run  # noqa: E402
from mtkd.train.trainer import Trainer  # noqa: E402

LOOP = ["batch_size=256", "epochs=6", "patience=2", "device=cpu"]
TEACHERS = {"cnn_345": ("text_cnn", []), "cnn_123": ("text_cnn", ["params.kernel_sizes=[1,2,3]", "params.filters=150"])}
STUDENT = ["params.embedding_dim=64", "params.hidden_units=[256,128]", "optimizer.lr=0.003"]
WEIGHTINGS = {"kd_average": "average", "kd_gate": "gate", "kd_policy": "policy"}


def test_accuracy(run: Path) -> tuple[float, float]:
    """(accuracy at p = 0.5 on the test split, ms per 1,000 test rows of one forward pass)."""
    cfg, ds, model = load_run(run)
    trainer = Trainer(cfg, ds, model, Supervised("binary"), run, progress=False, log=lambda s: None)
    logits, labels, _, _ = trainer.predict("test")
    acc = float(((logits.numpy() > 0) == (labels.numpy() > 0.5)).mean())
    batch = first_rows(ds, "test", 1000)
    return acc, batch_latency_ms(model, batch)


def one_seed(data: Path, runs: Path, seed: int) -> dict[str, dict]:
    out: dict[str, dict] = {}

    def train(name: str, model: str, sets: list[str]) -> None:
        t = time.perf_counter()
        cfg = load_train_config(None, LOOP + sets, model=model, seed=seed)
        s = train_run(cfg, data, runs / f"{name}-{seed}", force=True, progress=False, log=lambda m: None)
        acc, ms = test_accuracy(runs / f"{name}-{seed}")
        out[name] = {"acc": acc, "auc": s["test"]["auc"], "logloss": s["test"]["logloss"], "params": s["params"],
                     "ms": ms, "seconds": time.perf_counter() - t}
        print(f"  seed {seed} {name:11s} acc {acc:.4f} auc {s['test']['auc']:.4f} logloss {s['test']['logloss']:.4f} "
              f"({out[name]['seconds']:.0f}s)", flush=True)

    for name, (model, sets) in TEACHERS.items():
        train(name, model, sets)
    train("dnn", "dnn", STUDENT)
    teachers = json.dumps([{"name": n, "run": str(runs / f"{n}-{seed}")} for n in TEACHERS])
    for name, weighting in WEIGHTINGS.items():
        train(name, "dnn", STUDENT + [f"distill.teachers={teachers}", f"distill.weighting={weighting}"])
    return out


def table(results: list[dict[str, dict]]) -> str:
    def ms(vals: list[float]) -> str:
        return f"{statistics.mean(vals):.4f} ± {statistics.stdev(vals) if len(vals) > 1 else 0.0:.4f}"

    lines = ["| model | test accuracy | test AUC | test logloss | params | ms / 1,000 rows |", "|---|---|---|---|---|---|"]
    for name in results[0]:
        rows = [r[name] for r in results]
        lines.append(f"| {name} | {ms([r['acc'] for r in rows])} | {ms([r['auc'] for r in rows])} | "
                     f"{ms([r['logloss'] for r in rows])} | {rows[0]['params']:,} | "
                     f"{float(np.median([r['ms'] for r in rows])):.2f} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workdir", type=Path, required=True)
    ap.add_argument("--glue", type=Path, default=REPO.parent / "shared" / "data" / "glue")
    ap.add_argument("--seeds", default="2026,2027,2028")
    args = ap.parse_args()
    data = args.workdir / "data" / "sst2"
    prepare(load_schema(REPO / "configs/datasets/sst2.yaml"), data, args.glue / "SST-2" / "train.tsv",
            test=args.glue / "SST-2" / "dev.tsv")
    results = [one_seed(data, args.workdir / "runs", int(s)) for s in args.seeds.split(",")]
    print(f"\nSST-2 (test = GLUE dev, 872 sentences), {len(results)} seed(s)\n")
    print(table(results))


if __name__ == "__main__":
    main()
