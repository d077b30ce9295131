"""Text classification: encoders that read word order, on real TSV files through the whole path
(prepare, teacher, distillation with reinforced selection, export)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import fit_until
from mtkd.config import load_train_config
from mtkd.data.batch import Batch
from mtkd.data.feature_map import FeatureMap, SequenceField
from mtkd.data.prepare import prepare
from mtkd.data.schema import load_schema
from mtkd.models import build_model
from mtkd.serve.export import export_run
from mtkd.train.run import train_run

REPO = Path(__file__).resolve().parents[1]
QUIET = dict(progress=False, log=lambda s: None)


def order_batch(n: int, length: int = 8, vocab: int = 30, seed: int = 0) -> Batch:
    """Every sentence holds tokens 1 and 2 once, in random places; the label says whether 1
    comes right before 2 ("not good" against "good ... not"). A bag of words sees the same
    tokens in both classes."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, vocab, (n, length), generator=g)
    label = torch.randint(0, 2, (n,), generator=g)
    first = torch.randint(0, length - 1, (n,), generator=g)
    other = (first + 2 + torch.randint(0, length - 2, (n,), generator=g)) % length  # never first + 1
    rows = torch.arange(n)
    ids[rows, first] = 1
    second = torch.where(label == 1, first + 1, other)
    ids[rows, second] = 2
    return Batch(label=label.float(), index=rows, seq={"text": ids})


@pytest.mark.parametrize("name,min_auc", [("dnn", None), ("text_cnn", 0.95), ("text_transformer", 0.95)])
def test_text_encoders_read_word_order(name: str, min_auc: float | None) -> None:
    torch.manual_seed(0)
    fmap = FeatureMap(sequences=(SequenceField("text", 30, 8),))
    train, held = order_batch(3000), order_batch(1000, seed=1)
    model = build_model(name, fmap, **({"dropout": 0.0} if name != "dnn" else {}))
    # held-out AUC every 5 epochs; an encoder stops once past the bar
    auc, epoch = fit_until(model, train, held, epochs=25, every=5, batch_size=250, lr=3e-3, stop_above=min_auc)
    if min_auc is None:  # the bag of words cannot tell the classes apart, after all 25 epochs
        assert auc < 0.6, f"{name}: held-out AUC {auc:.3f}"
    else:
        assert auc > min_auc, f"{name}: held-out AUC {auc:.3f} after {epoch} epochs"


@pytest.mark.parametrize("name", ["text_transformer", "text_cnn"])
def test_encoders_ignore_padding_slots(name: str) -> None:
    """They read the batch's longest text only; the same rows with fewer padding slots (or
    more) score the same, and an empty text scores without NaN."""
    torch.manual_seed(0)
    fmap = FeatureMap(sequences=(SequenceField("text", 30, 8),))
    model = build_model(name, fmap).eval()
    ids = order_batch(16).seq["text"][:, :5]
    wide = torch.cat([ids, torch.zeros(16, 3, dtype=ids.dtype)], 1)
    ids[3, 2:] = 0  # rows of different lengths
    wide[3, 2:] = 0
    ids[5], wide[5] = 0, 0  # an empty text
    with torch.no_grad():
        a = model(Batch(label=torch.zeros(16), index=torch.arange(16), seq={"text": ids})).logits
        b = model(Batch(label=torch.zeros(16), index=torch.arange(16), seq={"text": wide})).logits
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert torch.isfinite(a).all()


WORDS = "the a film movie plot actors story was is very quite really rather".split()


def write_reviews(path: Path, rows: int, seed: int) -> None:
    """SST-2-shaped TSV (`sentence<TAB>label`): sentiment from "good" / "bad", flipped by a "not"
    right before it, so word order matters."""
    rng = np.random.default_rng(seed)
    with open(path, "w", newline="") as f:
        w = csv.writer(f, delimiter="\t", lineterminator="\n")
        w.writerow(["sentence", "label"])
        for _ in range(rows):
            words = list(rng.choice(WORDS, rng.integers(4, 12)))
            good, negated = rng.random() < 0.5, rng.random() < 0.4
            at = int(rng.integers(0, len(words) + 1))
            words[at:at] = (["not"] if negated else []) + ["good" if good else "bad"]
            if rng.random() < 0.3:  # a stray "not" elsewhere does not negate
                words.insert(0, "not")
            w.writerow([" ".join(words) + " ", int(good != negated)])


@pytest.fixture(scope="module")
def reviews(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("text")
    write_reviews(root / "train.tsv", 3000, seed=1)
    write_reviews(root / "dev.tsv", 500, seed=2)
    prepare(load_schema(REPO / "configs/datasets/sst2.yaml"), root / "ds", root / "train.tsv", test=root / "dev.tsv")
    return root


def test_text_teacher_distils_into_a_bag_of_words_student(reviews: Path) -> None:
    sets = ["batch_size=128", "epochs=6", "device=cpu", "patience=6"]
    teacher = train_run(load_train_config(None, sets, model="text_cnn"), reviews / "ds", reviews / "cnn", **QUIET)
    bag = sets + ["params.embedding_dim=16", "optimizer.lr=0.01"]  # 6 x 22 steps: the student needs a larger step
    plain = train_run(load_train_config(None, bag, model="dnn"), reviews / "ds", reviews / "dnn", **QUIET)
    assert teacher["test"]["auc"] > 0.95 and teacher["test"]["auc"] > plain["test"]["auc"] + 0.03
    kd = bag + [f'distill.teachers=[{{"name": "cnn", "run": "{reviews / "cnn"}"}}]',
                 "distill.weighting=policy"]
    student = train_run(load_train_config(None, kd, model="dnn"), reviews / "ds", reviews / "kd", **QUIET)
    assert np.isfinite(student["valid"]["kd_loss"]) and student["test"]["auc"] > 0.8
    logged = [json.loads(x) for x in (reviews / "kd" / "metrics.jsonl").read_text().splitlines()]
    assert "train.reward" in logged[-1]  # the policy selected and learned after its warm-up
    meta = export_run(reviews / "cnn", reviews / "export", formats=("onnx", "torchscript"))
    assert max(f["parity"]["max_abs_diff"] for f in meta["formats"].values()) <= 1e-4
