"""Pretrained word vectors as the start of a text field's embedding (`word_vectors:`): the file
formats, the rows they set, the errors, and that they help where the training data is small."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from mtkd.config import load_train_config
from mtkd.data.feature_map import CategoricalField, FeatureMap, SequenceField
from mtkd.data.prepare import prepare
from mtkd.data.schema import schema_from_dict
from mtkd.data.store import Dataset
from mtkd.errors import ConfigError, DataError
from mtkd.models import build_model
from mtkd.models.word_vectors import field_table, init_word_vectors, read_word_vectors
from mtkd.train.run import train_run

QUIET = dict(progress=False, log=lambda s: None)


def test_reads_glove_and_word2vec_text(tmp_path: Path) -> None:
    (tmp_path / "glove.txt").write_text("the 0.1 0.2 0.3\ncat 1 2 3\ndog 4 5 6\ncat 9 9 9\n")
    (tmp_path / "w2v.txt").write_text("3 3\nthe 0.1 0.2 0.3\ncat 1 2 3\n3 7 8 9\n")
    ids, vecs = read_word_vectors(tmp_path / "glove.txt", {"cat": 5, "bird": 6, "the": 2}, 3)
    assert ids.tolist() == [2, 5] and np.allclose(vecs, [[0.1, 0.2, 0.3], [1, 2, 3]])
    ids, vecs = read_word_vectors(tmp_path / "w2v.txt", {"3": 4, "cat": 5}, 3)  # header skipped, "3" a word
    assert ids.tolist() == [5, 4] and vecs[1].tolist() == [7, 8, 9]
    with pytest.raises(DataError, match=r"glove.txt: line 1: the vector of 'the' has 3 values, the embedding 4; "
                                        r"set params.embedding_dim: 3"):
        read_word_vectors(tmp_path / "glove.txt", {"cat": 5}, 4)
    with pytest.raises(ConfigError, match="does not exist"):
        read_word_vectors(tmp_path / "nope.txt", {"cat": 5}, 3)




def test_a_bad_value_names_the_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "v.txt").write_text("the 0.1 0.2 0.3\ncat 1 abc 3\n")
    with pytest.raises(DataError, match=r"v.txt: line 2: value 2 of 'cat' is 'abc', not a number; fix or delete"):
        read_word_vectors(tmp_path / "v.txt", {"cat": 5}, 3)


@pytest.mark.parametrize("line, n", [("cat 1 2", 2), ("cat 1 2 3 4", 4)])
def test_a_wrong_count_names_the_file_and_line(tmp_path: Path, line: str, n: int) -> None:
    (tmp_path / "v.txt").write_text(f"the 0.1 0.2 0.3\n\n{line}\n")  # line 3: empty lines count
    with pytest.raises(DataError, match=rf"v.txt: line 3: the vector of 'cat' has {n} values, not 3 as the first "
                                        r"line; the line is damaged"):
        read_word_vectors(tmp_path / "v.txt", {"cat": 5}, 3)
    assert read_word_vectors(tmp_path / "v.txt", {"the": 5}, 3)[0].tolist() == [5]  # other words' lines unread


def test_words_with_spaces(tmp_path: Path) -> None:
    (tmp_path / "v.txt").write_text(". . . 1 2 3\n. 4 5 6\nat home 7 8 9\n")  # as in glove.840B
    ids, vecs = read_word_vectors(tmp_path / "v.txt", {".": 2, ". . .": 3, "at home": 4, "at": 5}, 3)
    assert ids.tolist() == [3, 2, 4] and vecs.tolist() == [[1, 2, 3], [4, 5, 6], [7, 8, 9]]
    ids, vecs = read_word_vectors(tmp_path / "v.txt", {".": 2, "at": 5}, 3)  # "." is not ". . ."'s vector
    assert ids.tolist() == [2] and vecs.tolist() == [[4, 5, 6]]


def test_tab_separated(tmp_path: Path) -> None:
    (tmp_path / "v.txt").write_text("the\t0.1\t0.2\t0.3\ncat\t1 2\t3 \r\n")
    ids, vecs = read_word_vectors(tmp_path / "v.txt", {"cat": 5, "the": 2}, 3)
    assert ids.tolist() == [2, 5] and vecs[1].tolist() == [1, 2, 3]


def _gz(path: Path, text: bytes) -> None:
    import gzip
    path.write_bytes(gzip.compress(text))


def _zip(path: Path, text: bytes) -> None:
    import zipfile
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("glove.6B.3d.txt", text)


@pytest.mark.parametrize("name, write, fix", [("v.txt.gz", _gz, "gzip-compressed; decompress it first \\(`gzip -dk"),
                                              ("glove.zip", _zip, "zip-compressed; decompress it first \\(`unzip")])
def test_compressed_files_are_refused_with_the_fix(tmp_path: Path, name: str, write, fix: str) -> None:
    write(tmp_path / name, b"the 0.1 0.2 0.3\ncat 1 2 3\n")
    with pytest.raises(DataError, match=rf"{name}: is {fix} .*{name}`\)"):
        read_word_vectors(tmp_path / name, {"cat": 5}, 3)


def test_word2vec_binary_is_refused_with_the_fix(tmp_path: Path) -> None:
    import struct
    (tmp_path / "w2v.bin").write_bytes(b"2 3\nthe " + struct.pack("<3f", 0.1, 0.2, 0.3) + b"\ncat "
                                       + struct.pack("<3f", 1, 2, 3) + b"\n")
    with pytest.raises(DataError, match=r"w2v.bin: is a word2vec binary file; convert it to text first: .*"
                                        r"load_word2vec_format\('.*w2v.bin', binary=True\)"
                                        r".save_word2vec_format\('.*w2v.bin.txt', binary=False\)"):
        read_word_vectors(tmp_path / "w2v.bin", {"cat": 5}, 3)

def test_no_word_found_is_refused_with_the_case_hint(tmp_path: Path) -> None:
    model = build_model("dnn", FeatureMap(sequences=(SequenceField("text", 4, 3),)), embedding_dim=3)
    enc = tmp_path / "encoder.json"
    enc.write_text(json.dumps({"features": {"text": {"vocab": ["The", "Cat"]}}}))
    (tmp_path / "v.txt").write_text("the 0.1 0.2 0.3\ncat 1 2 3\n")
    with pytest.raises(DataError, match=r"word_vectors text: none of the 2 words .* is in .*v.txt .*2 are once "
                                        r"lower-cased.*`lowercase: true` on the text feature"):
        init_word_vectors(model, enc, {"text": str(tmp_path / "v.txt")}, lambda s: None)
    (tmp_path / "v.txt").write_text("dog 0.1 0.2 0.3\n")
    with pytest.raises(DataError, match=r"none of the 2 words .*first words: \['dog'\]\); check the file is text lines"):
        init_word_vectors(model, enc, {"text": str(tmp_path / "v.txt")}, lambda s: None)
    logged: list[str] = []  # some found: trains on, with the log line
    (tmp_path / "v.txt").write_text("Cat 1 2 3\n")
    assert init_word_vectors(model, enc, {"text": str(tmp_path / "v.txt")}, logged.append) == {"text": 1}
    assert "1 of 2 words found" in logged[0]


def test_table_of_a_field_follows_sharing() -> None:
    fmap = FeatureMap(categorical=(CategoricalField("user", 4), CategoricalField("item", 9)),
                      sequences=(SequenceField("q", 7, 3), SequenceField("d", 7, 3, share="q"),
                                 SequenceField("history", 9, 3, share="item")))
    model = build_model("text_cnn", fmap, text_fields=["q", "d"])
    assert field_table(model, "d") == (model.embedding.sequences[0], 0)
    assert field_table(model, "history") == (model.embedding.table, 4)
    with pytest.raises(ConfigError, match="not a sequence"):
        field_table(model, "user")


POS = [f"good{i}" for i in range(150)]
NEG = [f"bad{i}" for i in range(150)]


def write_reviews(path: Path, rows: int, seed: int) -> None:
    """Five words from 300, half of them positive; the label is the majority's polarity. With 200
    rows each word is seen ~3 times: too few to learn 300 polarities, enough with vectors."""
    rng = np.random.default_rng(seed)
    lines = ["text\tlabel"]
    for _ in range(rows):
        pol = rng.integers(0, 2, 5)
        words = [POS[rng.integers(150)] if p else NEG[rng.integers(150)] for p in pol]
        lines.append(f"{' '.join(words)}\t{int(pol.sum() >= 3)}")
    path.write_text("\n".join(lines) + "\n")


def test_vectors_help_a_small_text_task(tmp_path: Path) -> None:
    write_reviews(tmp_path / "train.tsv", 200, 1)
    write_reviews(tmp_path / "test.tsv", 2000, 2)
    rng = np.random.default_rng(3)
    with open(tmp_path / "vectors.txt", "w") as f:  # polarity along the first axis, noise elsewhere
        for w in ["unrelated", *POS, *NEG]:
            v = rng.normal(0, 0.3, 16)
            v[0] = 1.0 if w.startswith("good") else -1.0 if w.startswith("bad") else 0.0
            f.write(w + " " + " ".join(f"{x:.4f}" for x in v) + "\n")
    schema = schema_from_dict({"format": "tsv", "label": "label", "split": {"ratios": [0.8, 0.2]},
                               "features": [{"name": "text", "type": "sequence", "separator": " "}]})
    prepare(schema, tmp_path / "ds", tmp_path / "train.tsv", test=tmp_path / "test.tsv")
    sets = ["epochs=20", "batch_size=32", "patience=20", "device=cpu", "params.embedding_dim=16",
            "params.hidden_units=[32]", "optimizer.lr=0.003"]
    plain = train_run(load_train_config(None, sets, model="dnn"), tmp_path / "ds", tmp_path / "plain", **QUIET)
    logged: list[str] = []
    cfg = load_train_config(None, sets + [f"word_vectors.text={tmp_path / 'vectors.txt'}"], model="dnn")
    warm = train_run(cfg, tmp_path / "ds", tmp_path / "warm", progress=False, log=logged.append)
    vocab = json.loads((tmp_path / "ds" / "encoder.json").read_text())["features"]["text"]["vocab"]
    assert any(f"{len(vocab):,} of {len(vocab):,} words found" in m for m in logged)
    assert warm["test"]["auc"] > 0.9 and warm["test"]["auc"] > plain["test"]["auc"] + 0.05, \
        (warm["test"]["auc"], plain["test"]["auc"])
    # the run starts from the vectors: a fresh model given them has the file's rows
    model = build_model("dnn", Dataset(tmp_path / "ds").feature_map, embedding_dim=16)
    init_word_vectors(model, tmp_path / "ds" / "encoder.json", {"text": str(tmp_path / "vectors.txt")}, lambda s: None)
    row = model.embedding.sequences[0].weight[vocab.index("good7") + 2]
    assert float(row[0].detach()) == 1.0
    assert torch.all(model.embedding.sequences[0].weight[0] == 0)  # padding stays zero
