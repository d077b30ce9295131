"""Criteo-shaped synthetic CTR data with a known ground truth (the built-in default data).

13 count features (I1..I13, some missing) and 26 hashed categorical features (C1..C26,
Zipf-distributed). The label's logit has first-order terms, second-order (factorised)
interactions between field pairs and third-order interactions between field triples, so
interaction models have something a plain DNN must work to find. Because the true click
probability of every row is known, the Bayes-optimal AUC of any split can be reported.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pcsv

from mtkd.data.atomic import atomic_write_text, sweep_dead_files
from mtkd.errors import MtkdError

N_NUM, N_CAT = 13, 26
# Cardinalities loosely shaped like Criteo's (a few large fields, many small ones), capped so the
# ground truth stays learnable from ~1e5 rows. Interactions use the small and mid-sized fields:
# a pair of two 1e5-value fields would be noise that no model can learn from such data.
CARDINALITIES = [500, 550, 20000, 8000, 300, 24, 3000, 630, 3, 6000, 2000, 15000, 3200, 27,
                 3000, 10000, 10, 2000, 2200, 4, 8000, 17, 15, 5000, 100, 4000]
ZIPF_A = 1.15
PAIRS = [(0, 1), (4, 7), (5, 8), (12, 13), (1, 16), (18, 19), (21, 22), (24, 5), (7, 13), (0, 24)]
TRIPLES = [(0, 4, 5), (7, 13, 16), (8, 19, 21), (1, 22, 24)]
MISSING_NUM = [0.45, 0.0, 0.2, 0.2, 0.03, 0.2, 0.04, 0.0, 0.04, 0.45, 0.04, 0.75, 0.2]
MISSING_CAT = {2: 0.03, 11: 0.03, 18: 0.4, 19: 0.4, 21: 0.75, 24: 0.4, 25: 0.4}
LATENT = 4
DEFAULT_TEST_SPLIT = {"ratios": [0.8, 0.1, 0.1], "seed": 2026}


@dataclass
class Truth:
    """Ground-truth parameters drawn from the seed (independent of the number of rows)."""

    w1: list[np.ndarray]  # per field, first-order weight per value, [card, K]
    latent: list[np.ndarray]  # per field, latent vector per value, [card, K, LATENT]
    third: list[np.ndarray]  # per field, scalar factor per value, [card, K]
    num_w: np.ndarray  # [N_NUM, K]
    bias: np.ndarray  # [K]


def _truth(seed: int, k: int) -> Truth:
    rng = np.random.default_rng([seed, 1])
    w1 = [rng.normal(0, 0.35, (c, k)) for c in CARDINALITIES]
    latent = [rng.normal(0, LATENT ** -0.25, (c, k, LATENT)) for c in CARDINALITIES]
    third = [rng.normal(0, 1.0, (c, k)) for c in CARDINALITIES]
    num_w = rng.normal(0, 0.25, (N_NUM, k))
    bias = np.full(k, -1.7) if k == 1 else rng.normal(0, 0.3, k)
    return Truth(w1, latent, third, num_w, bias)


def _zipf_ids(rng: np.random.Generator, card: int, n: int) -> np.ndarray:
    p = 1.0 / np.arange(1, card + 1) ** ZIPF_A
    cdf = np.cumsum(p / p.sum())
    return np.minimum(np.searchsorted(cdf, rng.random(n)), card - 1).astype(np.int64)


def _tokens(seed: int, field: int, card: int) -> pa.Array:
    """Distinct 8-hex-digit strings standing for hashed values, like Criteo's."""
    rng = np.random.default_rng([seed, 2, field])
    codes = rng.choice(1 << 32, size=card, replace=False)
    return pa.array(np.char.mod("%08x", codes).astype(object), type=pa.string())


def generate(rows: int, seed: int, task: str = "binary", classes: int = 4) -> tuple[pa.Table, np.ndarray]:
    """Returns the table (label, I1..I13, C1..C26) and the true probabilities [rows, K]."""
    k = 1 if task == "binary" else classes
    truth = _truth(seed, k)
    rng = np.random.default_rng([seed, 3])
    ids = [_zipf_ids(rng, c, rows) for c in CARDINALITIES]
    # Missing values are decided first and the truth sees them as missing too (a categorical
    # field's missing rows share one level; a missing count acts as 0, what fill_na gives), so
    # the Bayes-optimal metrics are those of the observed features.
    miss_num = rng.random((rows, N_NUM)) < np.asarray(MISSING_NUM)
    miss_cat = {f: rng.random(rows) < p for f, p in MISSING_CAT.items()}
    for f, m in miss_cat.items():
        ids[f][m] = CARDINALITIES[f] - 1
    logit = np.tile(truth.bias, (rows, 1))
    first = sum(truth.w1[f][ids[f]] for f in range(N_CAT))
    second = sum((truth.latent[a][ids[a]] * truth.latent[b][ids[b]]).sum(-1) for a, b in PAIRS)
    third = sum(truth.third[a][ids[a]] * truth.third[b][ids[b]] * truth.third[c][ids[c]] for a, b, c in TRIPLES)
    counts = np.floor(np.exp(rng.normal(1.5, 1.4, (rows, N_NUM)))).astype(np.int64)
    counts[:, 1] -= 3  # like Criteo's I2, which has negative values
    lc = np.where(miss_num, 0.0, np.log1p(np.maximum(counts, 0)))
    numeric = (lc - 1.5) @ truth.num_w
    logit += 0.55 * first / np.sqrt(N_CAT / 8) + 0.6 * second / np.sqrt(len(PAIRS) / 2) \
        + 0.6 * third / np.sqrt(len(TRIPLES) / 2) + numeric
    if task == "binary":
        p = 1.0 / (1.0 + np.exp(-logit))
        label = (rng.random((rows, 1)) < p).astype(np.int64)[:, 0]
    else:
        z = logit - logit.max(1, keepdims=True)
        p = np.exp(z) / np.exp(z).sum(1, keepdims=True)
        label = (rng.random((rows, 1)) > np.cumsum(p, 1)).sum(1)
    cols: dict[str, pa.Array] = {"label": pa.array(label)}
    for j in range(N_NUM):
        cols[f"I{j + 1}"] = pa.array(counts[:, j], mask=miss_num[:, j])
    for f, card in enumerate(CARDINALITIES):
        tok = _tokens(seed, f, card).take(pa.array(ids[f]))
        if f in miss_cat:
            tok = pa.compute.if_else(pa.array(miss_cat[f]), pa.scalar(None, pa.string()), tok)
        cols[f"C{f + 1}"] = tok
    return pa.table(cols), p


def bayes_metrics(label: np.ndarray, p: np.ndarray, task: str) -> dict[str, float]:
    from mtkd.train.metrics import auc, logloss

    if task == "binary":
        return {"auc": auc(label, p[:, 0]), "logloss": logloss(label, p[:, 0])}
    acc = float((p.argmax(1) == label).mean())
    ll = float(-np.log(np.clip(p[np.arange(len(label)), label], 1e-12, 1)).mean())
    return {"accuracy": acc, "logloss": ll}


def write_synthetic(out: str | Path, rows: int, seed: int, task: str = "binary", classes: int = 4,
                    with_truth: bool = False) -> dict[str, Any]:
    """Write the CSV (atomically) and `<out>.meta.json` with the Bayes-optimal metrics."""
    from mtkd.data.splits import Source

    out = Path(out)
    table, p = generate(rows, seed, task, classes)
    label = table.column("label").to_numpy()
    if with_truth and task == "binary":
        table = table.append_column("p_true", pa.array(p[:, 0]))
    elif with_truth:  # one column per class, named as predict names its outputs (p_<class>)
        for k in range(p.shape[1]):
            table = table.append_column(f"p_true_{k}", pa.array(p[:, k]))
    if out.is_dir():
        raise MtkdError(f"--out {out}: is a directory; name the CSV file to write, e.g. {out / 'synth.csv'}")
    out.parent.mkdir(parents=True, exist_ok=True)
    sweep_dead_files(out.parent, f".{out.name}.*.tmp")
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        pcsv.write_csv(table, tmp, pcsv.WriteOptions(quoting_style="none"))
        tmp.replace(out)
    finally:
        tmp.unlink(missing_ok=True)
    src = Source([out], ["train", "valid", "test"], DEFAULT_TEST_SPLIT["ratios"], False, DEFAULT_TEST_SPLIT["seed"])
    test = src.assign(0, rows, None) == 2
    meta = {
        "rows": rows, "seed": seed, "task": task, "classes": classes if task != "binary" else 2,
        "label_rate": float(label.mean()) if task == "binary" else None,
        "bayes_optimal": {
            "all_rows": bayes_metrics(label, p, task),
            "test_split": {**DEFAULT_TEST_SPLIT, "rows": int(test.sum()),
                           **(bayes_metrics(label[test], p[test], task) if test.any() else {})},
        },
    }
    atomic_write_text(out.with_name(out.name + ".meta.json"), json.dumps(meta, indent=1))
    return meta
