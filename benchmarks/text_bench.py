"""Text classification on GLUE tasks: text encoders as teachers, a bag-of-words DNN as student.

    .venv/bin/python benchmarks/text_bench.py --workdir /tmp/textb [--task sst2] [--seeds 2026,2027,2028]
    .venv/bin/python benchmarks/text_bench.py --workdir /tmp/textq --quick     # smoke test: 1 seed, 1 epoch, 2k rows
    .venv/bin/python benchmarks/text_bench.py --workdir /tmp/textb --task rte --rows 1000 --epochs 2

Prepares a task from ../shared/data/glue (train.tsv re-split 90/10 into train/valid; dev.tsv
is the test split): SST-2 (sentiment), CoLA (acceptability), and the sentence pairs MRPC
(paraphrase) and RTE (entailment), whose two sentences share one vocabulary. Per seed it trains
two text CNN teachers (Kim's widths 3-4-5, and a 1-2-3 variant; on pairs they match the two
sentences as [u, v, |u - v|, u * v]), on pairs also a Transformer that reads both sentences
jointly, the plain DNN student (on pairs with `pair_features`: |u - v| and u * v of the pooled
sentences), and DNN students distilled from the teachers with averaging, the
gate and reinforced selection. Prints GLUE's metric of the task (accuracy; F1 too for MRPC; the
Matthews correlation for CoLA), AUC and logloss on the test split as mean ± std over seeds, with
parameters and CPU milliseconds per 1,000 test rows. SST-2's valid split holds phrases, its test
split whole sentences, so valid numbers run higher than test ones. `--rows N` trains on the
first N rows of train.tsv (copied into WORKDIR; the test split stays the whole dev.tsv),
`--epochs` caps the epochs (default 6); `--quick` = seed 2026 only, 1 epoch, 2,000 rows, a
smoke test whose numbers mean nothing. With one seed the std prints as n/a.
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
from mtkd.train.run import load_run, train_run  # noqa: E402

LOOP = ["batch_size=256", "patience=2", "device=cpu"]  # + epochs=E (--epochs, default 6)
EPOCHS = 6
TEACHERS = {"cnn_345": ("text_cnn", []), "cnn_123": ("text_cnn", ["params.kernel_sizes=[1,2,3]", "params.filters=150"])}
PAIR_TEACHERS = {**TEACHERS, "transformer": ("text_transformer", [])}
# task: (schema, GLUE folder, sentence pair?, GLUE's metrics)
TASKS = {"sst2": ("sst2.yaml", "SST-2", False, ["accuracy"]), "cola": ("cola.yaml", "CoLA", False, ["mcc", "accuracy"]),
         "mrpc": ("mrpc.yaml", "MRPC", True, ["f1", "accuracy"]), "rte": ("rte.yaml", "RTE", True, ["accuracy"])}
STUDENT = ["params.embedding_dim=64", "params.hidden_units=[256,128]", "optimizer.lr=0.003"]
WEIGHTINGS = {"kd_average": "average", "kd_gate": "gate", "kd_policy": "policy"}


def latency_ms(run: Path) -> float:
    """CPU milliseconds of one forward pass over 1,000 test rows."""
    _, ds, model = load_run(run)
    return batch_latency_ms(model, first_rows(ds, "test", 1000))


def one_seed(data: Path, runs: Path, seed: int, teachers: dict, metrics: list[str], pair: bool,
             epochs: int = EPOCHS) -> dict[str, dict]:
    out: dict[str, dict] = {}
    shown = metrics + ["auc", "logloss"]

    def train(name: str, model: str, sets: list[str]) -> None:
        t = time.perf_counter()
        cfg = load_train_config(None, LOOP + [f"epochs={epochs}"] + sets, model=model, seed=seed)
        s = train_run(cfg, data, runs / f"{name}-{seed}", force=True, progress=False, log=lambda m: None)
        out[name] = {**{k: s["test"][k] for k in shown}, "params": s["params"],
                     "ms": latency_ms(runs / f"{name}-{seed}"), "seconds": time.perf_counter() - t}
        print(f"  seed {seed} {name:11s} " + " ".join(f"{k} {s['test'][k]:.4f}" for k in shown)
              + f" ({out[name]['seconds']:.0f}s)", flush=True)

    for name, (model, sets) in teachers.items():
        train(name, model, sets)
    student = STUDENT + (["params.pair_features=true"] if pair else [])
    train("dnn", "dnn", student)
    refs = json.dumps([{"name": n, "run": str(runs / f"{n}-{seed}")} for n in teachers])
    for name, weighting in WEIGHTINGS.items():
        train(name, "dnn", student + [f"distill.teachers={refs}", f"distill.weighting={weighting}"])
    return out


def table(results: list[dict[str, dict]], metrics: list[str]) -> str:
    def ms(vals: list[float]) -> str:
        return f"{statistics.mean(vals):.4f} ± " + (f"{statistics.stdev(vals):.4f}" if len(vals) > 1 else "n/a")

    shown = metrics + ["auc", "logloss"]
    lines = ["| model | " + " | ".join(f"test {k}" for k in shown) + " | params | ms / 1,000 rows |",
             "|---|" + "---|" * (len(shown) + 2)]
    for name in results[0]:
        rows = [r[name] for r in results]
        lines.append(f"| {name} | " + " | ".join(ms([r[k] for r in rows]) for k in shown)
                     + f" | {rows[0]['params']:,} | {float(np.median([r['ms'] for r in rows])):.2f} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workdir", type=Path, required=True)
    ap.add_argument("--glue", type=Path, default=REPO.parent / "shared" / "data" / "glue")
    ap.add_argument("--task", choices=sorted(TASKS), default="sst2")
    ap.add_argument("--seeds", default=None, help="comma-separated run seeds (default 2026,2027,2028)")
    ap.add_argument("--rows", type=int, default=None, help="train on the first N rows of train.tsv (default: all)")
    ap.add_argument("--epochs", type=int, default=None, help=f"maximum epochs per run (default {EPOCHS})")
    ap.add_argument("--quick", action="store_true", help="smoke test: seed 2026 only, 1 epoch, 2,000 training rows")
    args = ap.parse_args()
    q = args.quick
    seeds = [int(s) for s in (args.seeds or ("2026" if q else "2026,2027,2028")).split(",")]
    epochs = args.epochs or (1 if q else EPOCHS)
    n_rows = args.rows or (2000 if q else None)
    schema, folder, pair, metrics = TASKS[args.task]
    sch = load_schema(REPO / "configs/datasets" / schema)
    train = args.glue / folder / "train.tsv"
    data = args.workdir / "data" / (args.task if n_rows is None else f"{args.task}_first{n_rows}")
    if n_rows is not None:  # the header (where the schema has one) and the first n_rows records
        head = args.workdir / "data" / f"{args.task}_train_first{n_rows}.tsv"
        head.parent.mkdir(parents=True, exist_ok=True)
        with open(train, newline="") as src, open(head, "w", newline="") as dst:
            for i, line in enumerate(src):
                if i >= n_rows + int(bool(sch.header)):
                    break
                if sch.quoting and any(f.startswith('"') for f in line.split("\t")):
                    raise SystemExit(f"--rows: line {i + 1} of {train} has a quoted field (it may span lines); "
                                     "not cut by lines here")
                dst.write(line)
        train = head
    prepare(sch, data, train, test=args.glue / folder / "dev.tsv")
    teachers = PAIR_TEACHERS if pair else TEACHERS
    runs = args.workdir / "runs" / (args.task if n_rows is None else f"{args.task}_first{n_rows}")
    results = [one_seed(data, runs, s, teachers, metrics, pair, epochs) for s in seeds]
    manifest = json.loads((data / "manifest.json").read_text())["splits"]
    rows, train_rows = manifest["test"]["rows"], manifest["train"]["rows"]
    print(f"\n{folder} (test = GLUE dev, {rows:,} rows; {train_rows:,} training rows; at most {epochs} epoch(s)), "
          f"{len(results)} seed(s)\n")
    print(table(results, metrics))


if __name__ == "__main__":
    main()
