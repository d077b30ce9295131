"""Text classification on GLUE tasks: text encoders as teachers, a bag-of-words DNN as student.

    .venv/bin/python benchmarks/text_bench.py --workdir /tmp/textb [--task sst2] [--seeds 2026,2027,2028]

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
split whole sentences, so valid numbers run higher than test ones.
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

LOOP = ["batch_size=256", "epochs=6", "patience=2", "device=cpu"]
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


def one_seed(data: Path, runs: Path, seed: int, teachers: dict, metrics: list[str], pair: bool) -> dict[str, dict]:
    out: dict[str, dict] = {}
    shown = metrics + ["auc", "logloss"]

    def train(name: str, model: str, sets: list[str]) -> None:
        t = time.perf_counter()
        cfg = load_train_config(None, LOOP + sets, model=model, seed=seed)
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
        return f"{statistics.mean(vals):.4f} ± {statistics.stdev(vals) if len(vals) > 1 else 0.0:.4f}"

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
    ap.add_argument("--seeds", default="2026,2027,2028")
    args = ap.parse_args()
    schema, folder, pair, metrics = TASKS[args.task]
    data = args.workdir / "data" / args.task
    prepare(load_schema(REPO / "configs/datasets" / schema), data, args.glue / folder / "train.tsv",
            test=args.glue / folder / "dev.tsv")
    teachers = PAIR_TEACHERS if pair else TEACHERS
    runs = args.workdir / "runs" / args.task
    results = [one_seed(data, runs, int(s), teachers, metrics, pair) for s in args.seeds.split(",")]
    rows = json.loads((data / "manifest.json").read_text())["splits"]["test"]["rows"]
    print(f"\n{folder} (test = GLUE dev, {rows:,} rows), {len(results)} seed(s)\n")
    print(table(results, metrics))


if __name__ == "__main__":
    main()
