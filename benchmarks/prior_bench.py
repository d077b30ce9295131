"""Output prior A/B: the same runs with the output bias started at the label prior (`output_prior:
true`, the default) and at the layer's own init (`false`), side by side, several seeds.

    nice -n 19 .venv/bin/python benchmarks/prior_bench.py                              # ~15 min
    nice -n 19 .venv/bin/python benchmarks/prior_bench.py --datasets criteo,avazu --models dnn

Data and profiles are zoo_bench.py's (Frappe pooled and re-split 80/10/10, the 10k-row Criteo and
Avazu samples; `anchor` = the DeepCTR-Torch settings, `tuned` = mtkd's tuned settings) plus
`default`: no overrides at all, what `mtkd train --data D --model M` does (batch 4096, at most 10
epochs, patience 2), where a small dataset has two steps an epoch and the start matters most.
Only `output_prior` differs between the two columns of a row; seeds 2026.. change initialisation
and batch order alike for both. Test AUC and logloss as mean ± std over the seeds, the mean best
epoch after the slash. Finished cells are kept in WORKDIR/prior_results.json and not run again.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from zoo_bench import PROFILES, prepare_dataset, run_mtkd  # noqa: E402

PROFILE_NAMES = ("default", *PROFILES)


def run_cell(data: Path, runs: Path, model: str, profile: str, seed: int, prior: bool) -> dict[str, Any]:
    extra = [f"output_prior={'true' if prior else 'false'}"]
    name = f"{model}-{profile}-{seed}-{'prior' if prior else 'init'}"
    if profile == "default":
        from mtkd.config import load_train_config
        from mtkd.train.run import train_run

        cfg = load_train_config(None, extra, model=model, seed=seed, device="cpu")
        s = train_run(cfg, data, runs / name, force=True, progress=False, log=lambda _m: None)
        return {"test_auc": s["test"]["auc"], "test_logloss": s["test"]["logloss"], "best_epoch": s["best_epoch"]}
    r = run_mtkd(data, runs / name, model, profile, seed, extra)
    return {k: r[k] for k in ("test_auc", "test_logloss", "best_epoch")}


def ms(xs: list[float]) -> str:
    """Mean ± std; with one seed the std is n/a (there is none), not 0."""
    return f"{statistics.fmean(xs):.4f} ± " + (f"{statistics.stdev(xs):.4f}" if len(xs) > 1 else "n/a")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", default="criteo,avazu,frappe")
    ap.add_argument("--models", default="dnn,deepfm,dcn")
    ap.add_argument("--profiles", default=",".join(PROFILE_NAMES[:3]), help=", ".join(PROFILE_NAMES))
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--workdir", default="/tmp/mtkd_prior_bench")
    args = ap.parse_args()
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    store = work / "prior_results.json"
    done: dict[str, Any] = json.loads(store.read_text()) if store.exists() else {}
    seeds = [2026 + i for i in range(args.seeds)]
    for ds in args.datasets.split(","):
        data = prepare_dataset(ds, work, 200_000)
        for model in args.models.split(","):
            for profile in args.profiles.split(","):
                for seed in seeds:
                    for prior in (True, False):
                        key = f"{ds}|{model}|{profile}|{seed}|{prior}"
                        if key not in done:
                            done[key] = run_cell(data, work / "runs" / ds, model, profile, seed, prior)
                            tmp = store.with_suffix(".tmp")
                            tmp.write_text(json.dumps(done, indent=1))
                            tmp.replace(store)
                            print(f"  {key}: {done[key]}", flush=True)
        print(f"\n### {ds} (test AUC / logloss, mean ± std over {len(seeds)} seeds; best epoch mean)\n")
        print("| model | profile | prior: AUC | prior: logloss | init: AUC | init: logloss | AUC diff "
              "(pooled std) | best epoch prior / init |")
        print("|---|---|---|---|---|---|---|---|")
        for model in args.models.split(","):
            for profile in args.profiles.split(","):
                on = [done[f"{ds}|{model}|{profile}|{s}|True"] for s in seeds]
                off = [done[f"{ds}|{model}|{profile}|{s}|False"] for s in seeds]
                a, b = [r["test_auc"] for r in on], [r["test_auc"] for r in off]
                pooled = (f"{math.sqrt((statistics.variance(a) + statistics.variance(b)) / 2):.4f}" if len(a) > 1
                          else "n/a: 1 seed, no verdict")
                print(f"| {model} | {profile} | {ms(a)} | {ms([r['test_logloss'] for r in on])} | {ms(b)} | "
                      f"{ms([r['test_logloss'] for r in off])} | {statistics.fmean(a) - statistics.fmean(b):+.4f} "
                      f"({pooled}) | {statistics.fmean(r['best_epoch'] for r in on):.1f} / "
                      f"{statistics.fmean(r['best_epoch'] for r in off):.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
