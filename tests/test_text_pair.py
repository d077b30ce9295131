"""Sentence-pair text tasks (paraphrase, entailment: GLUE's MRPC and RTE) and the file shapes of
GLUE: a shared vocabulary and embedding table for the two sentences, text options
(lower-case, punctuation split), quotes read as text, renamed headers, text labels."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from conftest import fit_until
from mtkd.config import load_train_config
from mtkd.data.batch import Batch
from mtkd.data.feature_map import FeatureMap, SequenceField
from mtkd.data.prepare import prepare
from mtkd.data.schema import load_schema
from mtkd.errors import ConfigError, DataError
from mtkd.models import build_model
from mtkd.serve.export import export_run
from mtkd.serve.predict import predict_file
from mtkd.train.run import train_run

REPO = Path(__file__).resolve().parents[1]
QUIET = dict(progress=False, log=lambda s: None)
WORDS = "the a cat dog sat ran on under mat rug and then quickly slowly big small red blue".split()


def write_mrpc(path: Path, rows: int, seed: int) -> None:
    """MRPC's shape: a BOM on the header, `Quality<TAB>#1 ID<TAB>#2 ID<TAB>#1 String<TAB>#2 String`,
    quotes inside fields that are text, not CSV quoting. A paraphrase (1) is the same words with
    two neighbours swapped; a non-paraphrase (0) has other words."""
    rng = np.random.default_rng(seed)
    with open(path, "w", encoding="utf-8", newline="") as f:
        f.write("\ufeffQuality\t#1 ID\t#2 ID\t#1 String\t#2 String\n")
        for i in range(rows):
            a = list(rng.choice(WORDS, int(rng.integers(5, 10))))
            same = rng.random() < 0.5
            b = list(a) if same else list(rng.choice(WORDS, int(rng.integers(5, 10))))
            k = int(rng.integers(0, len(b) - 1))
            b[k], b[k + 1] = b[k + 1], b[k]
            quote = ['"'] if i % 7 == 0 else []  # a field that starts with a quote mark
            f.write(f"{int(same)}\t{i}\t{i + rows}\t{' '.join(quote + a)}.\t{' '.join(b).capitalize()}.\n")


@pytest.fixture(scope="module")
def pairs(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("pairs")
    write_mrpc(root / "train.tsv", 2000, seed=1)
    write_mrpc(root / "dev.tsv", 400, seed=2)
    prepare(load_schema(REPO / "configs/datasets/mrpc.yaml"), root / "ds", root / "train.tsv", test=root / "dev.tsv")
    return root


def test_pair_file_is_read_as_glue_reads_it(pairs: Path) -> None:
    ds = pairs / "ds"
    rows = sum(json.loads((ds / "manifest.json").read_text())["splits"][s]["rows"] for s in ("train", "valid"))
    assert rows == 2000  # no line swallowed by a quote mark
    enc = json.loads((ds / "encoder.json").read_text())["features"]
    assert enc["sentence2"]["share_embedding"] == "sentence1" and "vocab" not in enc["sentence2"]
    vocab = enc["sentence1"]["vocab"]
    assert '"' in vocab and "." in vocab and "the" in vocab and "The" not in vocab and "mat." not in vocab
    # the same word has the same id in both columns (the second sentences are capitalised)
    s1, s2 = (np.load(ds / "train" / f"seq_sentence{k}.npy") for k in (1, 2))
    y = np.load(ds / "train" / "label.npy")
    same = np.flatnonzero(y == 1)[:50]
    assert all(set(s1[i][s1[i] > 0]) - {vocab.index('"') + 2} == set(s2[i][s2[i] > 0]) for i in same)


def test_text_labels_and_bad_label_names_the_line(tmp_path: Path) -> None:
    (tmp_path / "rte.tsv").write_text("index\tsentence1\tsentence2\tlabel\n0\tA b.\tA.\tentailment\n"
                                      "1\tC d.\tE.\tnot_entailment\n2\tF.\tG.\tmaybe\n")
    schema = load_schema(REPO / "configs/datasets/rte.yaml")
    with pytest.raises(DataError, match=r"line 4, column 'label'.*'maybe'.*label_values"):
        prepare(schema, tmp_path / "bad", tmp_path / "rte.tsv", test=tmp_path / "rte.tsv")
    (tmp_path / "rte.tsv").write_text("\n".join((tmp_path / "rte.tsv").read_text().splitlines()[:3]) + "\n")
    prepare(schema, tmp_path / "ds", tmp_path / "rte.tsv", valid=tmp_path / "rte.tsv", test=tmp_path / "rte.tsv")
    assert np.load(tmp_path / "ds" / "train" / "label.npy").tolist() == [1.0, 0.0]


def pair_batch(n: int, seed: int) -> Batch:
    """Label 1: the second sentence is the first one shuffled; 0: other random words. Each
    sentence alone says nothing about the label."""
    g = torch.Generator().manual_seed(seed)
    s1 = torch.randint(2, 40, (n, 6), generator=g)
    shuffled = torch.gather(s1, 1, torch.rand(n, 6, generator=g).argsort(1))
    label = torch.randint(0, 2, (n,), generator=g)
    s2 = torch.where(label[:, None] == 1, shuffled, torch.randint(2, 40, (n, 6), generator=g))
    return Batch(label=label.float(), index=torch.arange(n), seq={"s1": s1, "s2": s2})


@pytest.mark.parametrize("name,fields,at_least", [("text_cnn", None, 0.95), ("text_transformer", None, 0.95),
                                                  ("text_cnn", ["s2"], None)])
def test_pair_encoders_compare_the_sentences(name: str, fields: list | None, at_least: float | None) -> None:
    torch.manual_seed(0)
    fmap = FeatureMap(sequences=(SequenceField("s1", 40, 6), SequenceField("s2", 40, 6, share="s1")))
    auc = fit_pairs(build_model(name, fmap, dropout=0.0, text_fields=fields), stop_above=at_least)
    if at_least is None:  # one sentence alone: chance
        assert auc < 0.6, f"{name} on {fields}: held-out AUC {auc:.3f}"
    else:
        assert auc > at_least, f"{name}: held-out AUC {auc:.3f}"


def fit_pairs(model: torch.nn.Module, epochs: int = 12, stop_above: float | None = None) -> float:
    """Held-out AUC after training on pair_batch, measured every 3 epochs; with `stop_above` the
    training stops once the AUC is past it (the encoders get there in 3-6 of the 12)."""
    return fit_until(model, pair_batch(3000, 0), pair_batch(1000, 1), epochs=epochs, every=3, batch_size=250,
                     lr=3e-3, stop_above=stop_above)[0]


def test_bag_of_words_student_matches_pairs_with_pair_features() -> None:
    """The DNN's |u - v| and u * v of two pooled sentences that share a table: a shuffled copy pools to
    the same vector, which the plain [u, v] input leaves the MLP to discover."""
    fmap = FeatureMap(sequences=(SequenceField("s1", 40, 6), SequenceField("s2", 40, 6, share="s1")))
    torch.manual_seed(0)
    plain = fit_pairs(build_model("dnn", fmap, embedding_dim=16, hidden_units=[64]))
    torch.manual_seed(0)
    matched = fit_pairs(build_model("dnn", fmap, embedding_dim=16, hidden_units=[64], pair_features=True))
    assert matched > 0.95 and matched > plain + 0.05, (matched, plain)
    with pytest.raises(ConfigError, match="pair_features needs two sequence fields"):
        build_model("dnn", FeatureMap(sequences=(SequenceField("s1", 40, 6),)), pair_features=True)


def test_unknown_text_field_is_refused() -> None:
    fmap = FeatureMap(sequences=(SequenceField("s1", 40, 6),))
    with pytest.raises(ConfigError, match=r"text_fields \['s3'\] are not sequence fields"):
        build_model("text_cnn", fmap, text_fields=["s3"])


def test_pair_teacher_student_and_export(pairs: Path) -> None:
    sets = ["batch_size=128", "epochs=4", "device=cpu", "patience=4"]
    teacher = train_run(load_train_config(None, sets, model="text_cnn"), pairs / "ds", pairs / "cnn", **QUIET)
    assert teacher["test"]["auc"] > 0.9 and teacher["test"]["f1"] > 0.8 and teacher["test"]["mcc"] > 0.6
    kd = sets + ["params.embedding_dim=16", f'distill.teachers=[{{"name": "cnn", "run": "{pairs / "cnn"}"}}]',
                 "distill.weighting=gate"]
    student = train_run(load_train_config(None, kd, model="dnn"), pairs / "ds", pairs / "kd", **QUIET)
    assert np.isfinite(student["valid"]["kd_loss"]) and 0 <= student["test"]["accuracy"] <= 1
    tf = train_run(load_train_config(None, sets[:1] + ["epochs=1", "device=cpu"], model="text_transformer"),
                   pairs / "ds", pairs / "tf", **QUIET)
    assert np.isfinite(tf["test"]["logloss"])
    for run in ("cnn", "tf"):  # two sequence inputs, one shared table; the transformer's segments
        meta = export_run(pairs / run, pairs / f"export_{run}", formats=("onnx", "torchscript"))
        assert max(f["parity"]["max_abs_diff"] for f in meta["formats"].values()) <= 1e-4, run
    # the raw dev file (BOM, quotes as text, renamed header) scored by the export in ONNX Runtime
    done = predict_file(pairs / "export_cnn", pairs / "dev.tsv", pairs / "scores.csv")
    assert done["rows"] == 400 and done["engine"] == "onnx"
    p = np.loadtxt(pairs / "scores.csv", delimiter=",", skiprows=1)[:, 1]
    y = np.loadtxt(pairs / "dev.tsv", delimiter="\t", skiprows=1, usecols=0, encoding="utf-8", comments=None)
    assert roc_auc_score(y, p) == pytest.approx(teacher["test"]["auc"], abs=1e-6)


def write_cola(path: Path) -> None:
    rows = [("gj04", 1, "", "Our friends won't buy this analysis."), ("gj04", 0, "*", 'He said "go" .')] * 10
    with open(path, "w", newline="") as f:
        csv.writer(f, delimiter="\t", lineterminator="\n", quoting=csv.QUOTE_NONE, escapechar=None,
                   quotechar="\x00").writerows(rows)


def test_cola_file_without_header(tmp_path: Path) -> None:
    write_cola(tmp_path / "cola.tsv")
    cola = tmp_path / "cola.tsv"
    prepare(load_schema(REPO / "configs/datasets/cola.yaml"), tmp_path / "ds", cola, valid=cola, test=cola)
    vocab = json.loads((tmp_path / "ds" / "encoder.json").read_text())["features"]["sentence"]["vocab"]
    assert {"won", "'", "t", '"', "go", "."} <= set(vocab)
    assert np.load(tmp_path / "ds" / "train" / "label.npy").sum() == 10
