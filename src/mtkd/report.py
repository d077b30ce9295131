"""The results table of an experiment: every teacher and student, mean ± std over seeds."""

from __future__ import annotations

import csv
import io
import math
import statistics
from typing import Any

COLUMNS = ["model", "kind", "method", "seeds", "test_auc", "test_auc_std", "test_logloss", "test_logloss_std",
           "params", "ms_per_1000_rows", "onnx_ms_per_1000_rows", "best_epoch", "train_seconds"]


def _mean_std(xs: list[float]) -> tuple[float, float]:
    xs = [x for x in xs if x is not None and not math.isnan(x)]
    if not xs:
        return float("nan"), float("nan")
    return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)


def summarise(name: str, kind: str, method: str, runs: list[dict[str, Any]], latency_ms: float | None,
              task: str = "binary", metrics: tuple[str, ...] = ()) -> dict[str, Any]:
    """One table row from the summaries of one model's runs (one per seed); `metrics` are more
    test metrics to report (GLUE's F1 or MCC next to AUC), as `test_<name>` and `test_<name>_std`."""
    key = "auc" if task == "binary" else "accuracy"
    auc_m, auc_s = _mean_std([r["test"].get(key, float("nan")) for r in runs])
    ll_m, ll_s = _mean_std([r["test"].get("logloss", float("nan")) for r in runs])
    extra: dict[str, Any] = {}
    for m in metrics:
        extra[f"test_{m}"], extra[f"test_{m}_std"] = _mean_std([r["test"].get(m, float("nan")) for r in runs])
    return {**extra,
        "model": name, "kind": kind, "method": method, "seeds": len(runs),
        "test_auc": auc_m, "test_auc_std": auc_s, "test_logloss": ll_m, "test_logloss_std": ll_s,
        "params": runs[0]["params"] if runs else None,
        "ms_per_1000_rows": latency_ms,
        "best_epoch": statistics.fmean(r["best_epoch"] for r in runs) if runs else None,
        "train_seconds": statistics.fmean(r["train_seconds"] for r in runs) if runs else None,
    }


def _extra_metrics(rows: list[dict[str, Any]]) -> list[str]:
    """Names of the additional test metrics the rows carry, in their order."""
    keys = rows[0] if rows else {}
    return [k[5:] for k in keys if k.startswith("test_") and not k.endswith("_std")
            and k not in ("test_auc", "test_logloss")]


def to_csv(rows: list[dict[str, Any]]) -> str:
    extra = [c for m in _extra_metrics(rows) for c in (f"test_{m}", f"test_{m}_std")]
    columns = COLUMNS[:8] + extra + COLUMNS[8:]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: r.get(k) for k in columns})
    return buf.getvalue()


def to_markdown(rows: list[dict[str, Any]], title: str, notes: list[str], task: str = "binary") -> str:
    metric = "AUC" if task == "binary" else "accuracy"
    onnx = any(r.get("onnx_ms_per_1000_rows") is not None for r in rows)
    extra = _extra_metrics(rows)
    lines = [f"# {title}", "", *notes, "",
             f"| model | kind | method | test {metric} (mean ± std) | test logloss (mean ± std) | "
             + "".join(f"test {m} (mean ± std) | " for m in extra) + "params | "
             f"ms / 1,000 rows |{' ONNX ms / 1,000 rows |' if onnx else ''} best epoch | train s |",
             f"|---|---|---|---|---|{'---|' * len(extra)}---:|---:|{'---:|' if onnx else ''}---:|---:|"]
    for r in rows:
        lat = "" if r["ms_per_1000_rows"] is None else f"{r['ms_per_1000_rows']:.2f}"
        ox = r.get("onnx_ms_per_1000_rows")
        ox_cell = (f" {ox:.2f} |" if ox is not None else " |") if onnx else ""
        lines.append(
            f"| {r['model']} | {r['kind']} | {r['method']} | {r['test_auc']:.4f} ± {r['test_auc_std']:.4f} | "
            f"{r['test_logloss']:.4f} ± {r['test_logloss_std']:.4f} | "
            + "".join(f"{r[f'test_{m}']:.4f} ± {r[f'test_{m}_std']:.4f} | " for m in extra)
            + f"{r['params']:,} | {lat} |{ox_cell} "
            f"{r['best_epoch']:.1f} | {r['train_seconds']:.1f} |")
    return "\n".join(lines) + "\n"
