"""The results table of an experiment: every teacher and student, mean ± std over seeds."""

from __future__ import annotations

import base64
import csv
import html
import io
import math
import statistics
from pathlib import Path
from typing import Any

COLUMNS = ["model", "kind", "method", "seeds", "test_auc", "test_auc_std", "test_logloss", "test_logloss_std",
           "params", "ms_per_1000_rows", "onnx_ms_per_1000_rows", "best_epoch", "train_seconds"]


def _mean_std(xs: list[float]) -> tuple[float, float | None]:
    """Mean and sample std; the std of one seed is None (unknown, not 0: one seed says nothing
    about the spread). A seed without the value (NaN, or null in its summary) makes both NaN:
    a mean of the others would pass for one over every seed the row counts."""
    if not xs or any(x is None or math.isnan(x) for x in xs):
        return float("nan"), float("nan")
    return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else None)


def _pm(mean: float, std: float | None) -> str:
    return f"{mean:.4f} ± " + ("n/a (1 seed)" if std is None else f"{std:.4f}")


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
    weights = {k[2:]: _mean_std([r["test"].get(k) for r in runs])[0]
               for k in (runs[0]["test"] if runs else {}) if k.startswith("w.")}
    if weights:
        extra["teacher_weights"] = weights
    return {**extra,
        "model": name, "kind": kind, "method": method, "seeds": len(runs),
        "test_auc": auc_m, "test_auc_std": auc_s, "test_logloss": ll_m, "test_logloss_std": ll_s,
        "params": runs[0]["params"] if runs else None,
        "ms_per_1000_rows": latency_ms,
        "best_epoch": (statistics.fmean(r["best_epoch"] for r in runs)
                       if runs and all(r["best_epoch"] is not None for r in runs) else None),
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


def _table(rows: list[dict[str, Any]], task: str) -> tuple[list[str], list[bool], list[list[str]]]:
    """Header, right-alignment per column and formatted cells: one layout for Markdown and HTML."""
    metric = "AUC" if task == "binary" else "accuracy"
    onnx = any(r.get("onnx_ms_per_1000_rows") is not None for r in rows)
    extra = _extra_metrics(rows)
    header = ["model", "kind", "method", f"test {metric} (mean ± std)", "test logloss (mean ± std)",
              *(f"test {m} (mean ± std)" for m in extra), "params", "ms / 1,000 rows",
              *(["ONNX ms / 1,000 rows"] if onnx else []), "best epoch", "train s"]
    right = [False] * (5 + len(extra)) + [True] * (len(header) - 5 - len(extra))

    def num(v: Any, fmt: str) -> str:
        return "" if v is None else format(v, fmt)

    cells = []
    for r in rows:
        cells.append([r["model"], r["kind"], r["method"],
                      _pm(r["test_auc"], r["test_auc_std"]), _pm(r["test_logloss"], r["test_logloss_std"]),
                      *(_pm(r[f"test_{m}"], r[f"test_{m}_std"]) for m in extra),
                      num(r["params"], ","), num(r["ms_per_1000_rows"], ".2f"),
                      *([num(r.get("onnx_ms_per_1000_rows"), ".2f")] if onnx else []),
                      num(r["best_epoch"], ".1f"), num(r["train_seconds"], ".1f")])
    return header, right, cells


def to_markdown(rows: list[dict[str, Any]], title: str, notes: list[str], task: str = "binary",
                images: tuple[Path, ...] = ()) -> str:
    header, right, cells = _table(rows, task)
    lines = [f"# {title}", "", *notes, "", "| " + " | ".join(header) + " |",
             "|" + "".join("---:|" if r else "---|" for r in right)]
    lines += ["| " + " | ".join(c) + " |" for c in cells]
    if images:
        lines += ["", *(f"![{p.stem}]({p.name})" for p in images)]
    return "\n".join(lines) + "\n"


def _inline(text: str) -> str:
    """Escaped note text with Markdown `code` spans as <code>."""
    parts = html.escape(text).split("`")
    return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))


def to_html(rows: list[dict[str, Any]], title: str, notes: list[str], task: str = "binary",
            images: tuple[Path, ...] = ()) -> str:
    """One self-contained page (plots embedded as PNG data) to mail or attach to a review."""
    header, right, cells = _table(rows, task)
    th = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td{' class=n' if r else ''}>{html.escape(c)}</td>" for c, r in zip(row, right))
                   + "</tr>\n" for row in cells)
    figs = "".join(f'<figure><img alt="{html.escape(p.stem)}" src="data:image/png;base64,'
                   f'{base64.b64encode(p.read_bytes()).decode()}"></figure>\n' for p in images)
    style = ("body{font-family:sans-serif;margin:2em;max-width:80em}table{border-collapse:collapse;font-size:90%}"
             "td,th{border:1px solid #ccc;padding:3px 7px}td.n{text-align:right}th{background:#f3f3f3}"
             "img{max-width:100%}")
    return (f"<!DOCTYPE html>\n<html><head><meta charset=utf-8><title>{html.escape(title)}</title>"
            f"<style>{style}</style></head><body>\n<h1>{html.escape(title)}</h1>\n"
            + "".join(f"<p>{_inline(n)}</p>\n" for n in notes)
            + f"<table><tr>{th}</tr>\n{body}</table>\n{figs}</body></html>\n")
