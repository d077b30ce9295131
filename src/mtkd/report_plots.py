"""The report's plots (PNG): what each student buys against its teachers.

* accuracy against serving latency, one point per model with its spread over seeds: the
  trade-off distillation is for (a student up and to the left of its teachers has won);
* validation curves of every run of the first seed: where each stopped and how KD moved it;
* the teacher weights each weighting student ended with (the gate's or the policy's choice).

Drawn with matplotlib's object API on an Agg canvas: no screen, no global backend switch.
"""

from __future__ import annotations

import io
import json
import math
from pathlib import Path
from typing import Any

from mtkd.data.atomic import atomic_write_bytes

STYLE = {"teacher": ("o", "tab:blue"), "ensemble": ("D", "tab:green"), "student": ("s", "tab:orange")}


def _figure(width: float, height: float) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Any, path: Path) -> Path:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    atomic_write_bytes(path, buf.getvalue())
    return path


def accuracy_latency(rows: list[dict[str, Any]], path: Path, task: str = "binary") -> Path:
    """Test AUC (accuracy for multi-class) against ms per 1,000 rows, log x axis."""
    metric = "AUC" if task == "binary" else "accuracy"
    from matplotlib.ticker import FuncFormatter

    fig = _figure(7.5, 4.8)
    ax = fig.add_subplot()
    points = []
    for kind, (marker, color) in STYLE.items():
        rs = [r for r in rows if r["kind"] == kind and r.get("ms_per_1000_rows")]
        if not rs:
            continue
        x = [r["ms_per_1000_rows"] for r in rs]
        y = [r["test_auc"] for r in rs]
        ax.errorbar(x, y, yerr=[r["test_auc_std"] or 0.0 for r in rs], fmt=marker, color=color, capsize=3,
                    label=kind + "s" if kind != "ensemble" else "teacher ensemble")
        points += [(xi, yi, r["model"]) for xi, yi, r in zip(x, y, rs)]
    ax.set_xscale("log")
    _label_points(ax, points)
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}"))
    ax.xaxis.set_minor_formatter(FuncFormatter(_two_and_five))
    ax.tick_params(axis="x", which="both", labelsize=8)
    ax.set_xlabel("serving time, ms per 1,000 rows (PyTorch, this machine; log scale)")
    ax.set_ylabel(f"test {metric} (mean ± std over seeds)")
    ax.set_title(f"Test {metric} against serving time")
    ax.grid(alpha=0.3, which="both")
    fig.legend(fontsize=8, ncol=3, loc="outside lower center")
    return _save(fig, path)


def _two_and_five(v: float, _pos: int) -> str:
    """Minor tick labels of a log axis at 2x and 5x each power of ten only (no crowding)."""
    lead = v / 10 ** math.floor(math.log10(v)) if v > 0 else 0
    return f"{v:g}" if round(lead) in (2, 5) else ""


def _label_points(ax: Any, points: list[tuple[float, float, str]]) -> None:
    """Name every point; models that serve at about the same speed (every DNN student) get
    their labels stacked apart on the right, joined to their points by a thin line."""
    lo, hi = ax.get_ylim()
    gap = (hi - lo) * 0.045
    placed: list[tuple[float, float]] = []  # (x, label y)
    for x, y, name in sorted(points, key=lambda p: p[1]):
        near = [ly for px, ly in placed if max(px, x) / min(px, x) < 2.0]
        ly = y
        for other in sorted(near):
            if abs(ly - other) < gap:
                ly = other + gap
        placed.append((x, ly))
        moved = abs(ly - y) > 1e-12
        ax.annotate(name, (x, y), xytext=(x * 1.06, ly), textcoords="data", fontsize=8, va="center",
                    arrowprops={"arrowstyle": "-", "lw": 0.5, "color": "0.5"} if moved else None)
    top = max([ly for _, ly in placed] + [hi])
    ax.set_ylim(lo, top + gap)


def _curve(run: Path, key: str) -> tuple[list[int], list[float], int | None]:
    """Steps and `key` of every evaluation of a run, and the index of the one it kept (at its
    best step; summaries written before that was recorded: the last evaluation of its best
    epoch, which with `eval_every` may be another one), or None."""
    steps, values, epochs = [], [], []
    metrics = Path(run) / "metrics.jsonl"
    if metrics.exists():
        for line in metrics.read_text().splitlines():
            rec = json.loads(line) if line.strip() else {}
            if rec.get(key) is not None:
                steps.append(int(rec["step"]))
                values.append(float(rec[key]))
                epochs.append(rec.get("epoch"))
    summary = Path(run) / "summary.json"
    saved = json.loads(summary.read_text()) if summary.exists() else {}
    if saved.get("best_step") in steps:
        return steps, values, steps.index(saved["best_step"])
    kept = [i for i, e in enumerate(epochs) if e == saved.get("best_epoch")]
    return steps, values, (kept[-1] if kept else None)


def _colors(n: int) -> list[Any]:
    """n distinct colours: matplotlib's ten, or twenty when more lines share a plot."""
    from matplotlib import colormaps

    cmap = colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(max(n, 1))]


def learning_curves(rows: list[dict[str, Any]], path: Path, task: str = "binary") -> Path | None:
    """Validation AUC (accuracy) per evaluation of each model's first-seed run."""
    key = "valid.auc" if task == "binary" else "valid.accuracy"
    fig = _figure(7.5, 4.8)
    ax = fig.add_subplot()
    colors = _colors(sum(1 for r in rows if r.get("run")))
    drawn = 0
    for r in rows:
        if not r.get("run"):
            continue
        steps, values, best = _curve(Path(r["run"]), key)
        if steps:
            color = colors[drawn]
            ax.plot(steps, values, "--" if r["kind"] == "teacher" else "-", marker=".", color=color,
                    label=r["model"])
            if best is not None:
                ax.plot([steps[best]], [values[best]], "*", color=color, markersize=11, markeredgecolor="k",
                        markeredgewidth=0.4)
            drawn += 1
    if not drawn:
        return None
    ax.set_xlabel("training steps")
    ax.set_ylabel(key)
    ax.set_title(f"{key} during training (first seed; teachers dashed, * = weights kept)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2, loc="lower right")
    return _save(fig, path)


def teacher_weights(rows: list[dict[str, Any]], path: Path) -> Path | None:
    """Mean test-split teacher weight of every student that weighs its teachers per instance."""
    rs = [r for r in rows if r.get("teacher_weights")]
    if not rs:
        return None
    teachers = list(dict.fromkeys(t for r in rs for t in r["teacher_weights"]))
    fig = _figure(7.5, 1.4 + 0.4 * len(rs))
    ax = fig.add_subplot()
    left = [0.0] * len(rs)
    for t in teachers:
        w = [r["teacher_weights"].get(t, 0.0) for r in rs]
        ax.barh([r["model"] for r in rs], w, left=left, label=t)
        left = [a + b for a, b in zip(left, w)]
    ax.set_xlim(0, 1)
    ax.set_xlabel("mean weight on the test split (mean over seeds)")
    ax.set_title("Teacher weights per student")
    fig.legend(fontsize=8, ncol=min(len(teachers), 4), loc="outside lower center")
    return _save(fig, path)


def draw_all(rows: list[dict[str, Any]], out: Path, task: str = "binary") -> list[Path]:
    """Every plot the rows allow, as PNG files in `out`; returns their paths."""
    made = [accuracy_latency(rows, out / "accuracy_latency.png", task),
            learning_curves(rows, out / "learning_curves.png", task),
            teacher_weights(rows, out / "teacher_weights.png")]
    return [p for p in made if p is not None]
