"""Encoder: vocabularies (min_count, OOV, padding, frequency order), numeric transforms, fill_na,
fitting on the training split only, and the encoder.json round trip."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from conftest import toy_rows, toy_schema, toy_schema_dict, write_delimited
from mtkd.data.encoder import MISSING_TOKEN, OOV_ID, PAD_ID, Encoder, EncoderFitter
from mtkd.data.prepare import prepare
from mtkd.data.readers import open_reader
from mtkd.data.schema import schema_from_dict
from mtkd.errors import DataError


def fit_file(path: Path, schema) -> Encoder:
    fitter = EncoderFitter(schema)
    start = 0
    for batch in open_reader(path, schema).batches():
        fitter.add(batch, np.arange(start, start + batch.num_rows))
        start += batch.num_rows
    return fitter.finish()


def transform_file(enc: Encoder, path: Path) -> dict[str, np.ndarray]:
    parts = [enc.transform(b) for b in open_reader(path, enc.schema).batches()]
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def cat_schema(**feature) -> object:
    return schema_from_dict({"label": "y", "features": [{"name": "c", "type": "categorical", **feature}]})


def write_cat(path: Path, values: list[str]) -> Path:
    return write_delimited(path, [[str(i % 2), v] for i, v in enumerate(values)], header=["y", "c"])


def test_ids_by_frequency_min_count_and_oov(tmp_path: Path) -> None:
    train = ["b"] * 3 + ["a"] * 5 + ["c"] * 3 + ["d"] + ["e"] * 2
    enc = fit_file(write_cat(tmp_path / "train.csv", train), cat_schema(min_count=2))
    # descending count, ties by value: a(5), b(3), c(3), e(2); d(1) is rarer than min_count
    assert enc.state["features"]["c"]["vocab"] == ["a", "b", "c", "e"]
    assert enc.vocab_size("c") == 6  # padding + OOV + 4 values
    new = write_cat(tmp_path / "new.csv", ["a", "b", "c", "e", "d", "zzz", ""])
    cat = transform_file(enc, new)["cat"][:, 0]
    np.testing.assert_array_equal(cat, [2, 3, 4, 5, OOV_ID, OOV_ID, OOV_ID])
    assert OOV_ID == 1 and PAD_ID == 0


def test_min_count_one_keeps_every_value(tmp_path: Path) -> None:
    enc = fit_file(write_cat(tmp_path / "train.csv", ["x", "y", "y"]), cat_schema())
    assert enc.state["features"]["c"]["vocab"] == ["y", "x"]
    cat = transform_file(enc, write_cat(tmp_path / "t.csv", ["x", "y"]))["cat"]
    np.testing.assert_array_equal(cat[:, 0], [3, 2])


def test_categorical_fill_na(tmp_path: Path) -> None:
    values = ["a", "", "a", "NA", "b", ""]
    enc = fit_file(write_cat(tmp_path / "train.csv", values), cat_schema())
    assert enc.state["features"]["c"]["vocab"] == [MISSING_TOKEN, "a", "b"]  # 3 missing, 2 a, 1 b
    np.testing.assert_array_equal(transform_file(enc, tmp_path / "train.csv")["cat"][:, 0], [3, 2, 3, 2, 4, 2])
    enc = fit_file(tmp_path / "train.csv", cat_schema(fill_na="b"))
    assert enc.state["features"]["c"]["vocab"] == ["b", "a"]  # the missing values count as "b"
    np.testing.assert_array_equal(transform_file(enc, tmp_path / "train.csv")["cat"][:, 0], [3, 2, 3, 2, 2, 2])


# ---------------------------------------------------------------------------- numeric
TRAIN_X = np.array([0.0, 1.0, 2.0, 3.0, 5.0, 8.0, 13.0, 21.0, 34.0, 55.0, -4.0, 100.0, 7.0, 7.0, 9.5])
TEST_X = np.array([-2.0, 0.5, 4.0, 1000.0, 7.0, 60.0])


def write_num(path: Path, x: np.ndarray, missing: int | None = None) -> Path:
    cells = [f"{v:g}" for v in x]
    if missing is not None:
        cells[missing] = ""
    return write_delimited(path, [[str(i % 2), c] for i, c in enumerate(cells)], header=["y", "x"])


def num_schema(transform, fill_na=None, bins: int = 4):
    f = {"name": "x", "type": "numeric", "transform": transform, "bins": bins}
    if fill_na is not None:
        f["fill_na"] = fill_na
    return schema_from_dict({"label": "y", "features": [f]})


def signed_log(x: np.ndarray) -> np.ndarray:
    return np.sign(x) * np.log1p(np.abs(x))


def _standardize(x: np.ndarray, train: np.ndarray) -> np.ndarray:
    return (x - train.mean()) / train.std()


def _bucketize(x: np.ndarray, train: np.ndarray, bins: int) -> np.ndarray:
    edges = np.unique(np.quantile(train, np.linspace(0, 1, bins + 1)[1:-1]))
    return np.searchsorted(edges, x, side="right") + 2


@pytest.mark.parametrize(
    "transform, expect",
    [
        ("none", lambda x, t: x),
        ("log", lambda x, t: signed_log(x)),
        ("standardize", lambda x, t: _standardize(x, t)),
        (["log", "standardize"], lambda x, t: _standardize(signed_log(x), signed_log(t))),
    ],
)
def test_numeric_transforms(tmp_path: Path, transform, expect) -> None:
    enc = fit_file(write_num(tmp_path / "train.csv", TRAIN_X), num_schema(transform))
    got = transform_file(enc, write_num(tmp_path / "test.csv", TEST_X))
    assert got["num"].dtype == np.float32 and got["num"].shape == (len(TEST_X), 1)
    np.testing.assert_allclose(got["num"][:, 0], expect(TEST_X, TRAIN_X), rtol=1e-5, atol=1e-6)
    assert "cat" not in got


@pytest.mark.parametrize("log", [False, True])
def test_bucketize_into_train_quantiles(tmp_path: Path, log: bool) -> None:
    transform = ["log", "bucketize"] if log else "bucketize"
    enc = fit_file(write_num(tmp_path / "train.csv", TRAIN_X), num_schema(transform, bins=4))
    f = (lambda v: signed_log(v)) if log else (lambda v: v)
    edges = np.quantile(f(TRAIN_X), [0.25, 0.5, 0.75])
    np.testing.assert_allclose(enc.state["features"]["x"]["edges"], edges)
    assert enc.vocab_size("x") == 2 + 4
    got = transform_file(enc, write_num(tmp_path / "test.csv", TEST_X))
    assert "num" not in got and got["cat"].dtype == np.int32
    np.testing.assert_array_equal(got["cat"][:, 0], _bucketize(f(TEST_X), f(TRAIN_X), 4))
    assert got["cat"].min() >= 2 and got["cat"].max() <= 5
    fmap = enc.feature_map()
    assert [c.name for c in fmap.categorical] == ["x"] and fmap.numeric == ()


def test_bucketize_collapses_duplicate_edges(tmp_path: Path) -> None:
    x = np.array([1.0] * 12 + [2.0, 3.0])
    enc = fit_file(write_num(tmp_path / "train.csv", x), num_schema("bucketize", bins=10))
    edges = enc.state["features"]["x"]["edges"]
    assert edges == sorted(set(edges))
    assert enc.vocab_size("x") == len(edges) + 3


@pytest.mark.parametrize("transform", ["none", "standardize", ["log", "standardize"]])
def test_numeric_fill_na(tmp_path: Path, transform) -> None:
    enc = fit_file(write_num(tmp_path / "train.csv", TRAIN_X, missing=3), num_schema(transform, fill_na=-7))
    filled = TRAIN_X.copy()
    filled[3] = -7.0
    got = transform_file(enc, tmp_path / "train.csv")["num"][:, 0]
    t = filled if "log" not in transform else signed_log(filled)
    want = t if transform == "none" else _standardize(t, t)  # the fill value counts in train stats
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    # without fill_na a missing number is 0
    enc = fit_file(tmp_path / "train.csv", num_schema("none"))
    assert transform_file(enc, tmp_path / "train.csv")["num"][3, 0] == 0.0


def test_constant_column_standardizes_to_zero(tmp_path: Path) -> None:
    enc = fit_file(write_num(tmp_path / "train.csv", np.full(5, 3.0)), num_schema("standardize"))
    got = transform_file(enc, write_num(tmp_path / "t.csv", np.array([3.0, 5.0])))["num"][:, 0]
    np.testing.assert_allclose(got, [0.0, 2.0])


# ---------------------------------------------------------------------------- fit on train only
@pytest.fixture
def explicit_splits(tmp_path: Path) -> tuple[Path, Path, Path]:
    train_rows = toy_rows(600, seed=11)
    valid_rows = toy_rows(200, seed=12, start=600)
    test_rows = toy_rows(200, seed=13, start=800)
    test_rows[5][3] = "only_in_test"
    test_rows[6][3] = "only_in_test"
    test_rows[7][5] = "only_in_test|t1"
    for r in test_rows:  # shift x so that stats over all files differ from the train stats
        r[2] = f"{float(r[2]) * 10 + 500:g}" if r[2] else ""
    return (write_delimited(tmp_path / "train.csv", train_rows), write_delimited(tmp_path / "valid.csv", valid_rows),
            write_delimited(tmp_path / "test.csv", test_rows))


def test_fit_on_train_only(tmp_path: Path, explicit_splits) -> None:
    train, valid, test = explicit_splits
    out = tmp_path / "ds"
    prepare(toy_schema(), out, train, valid=valid, test=test)
    enc = json.loads((out / "encoder.json").read_text())
    assert "only_in_test" not in enc["features"]["c1"]["vocab"]
    assert "only_in_test" not in enc["features"]["tags"]["vocab"]
    test_cat = np.load(out / "test" / "cat.npy")
    np.testing.assert_array_equal(test_cat[5:7, 0], [OOV_ID, OOV_ID])
    assert np.load(out / "test" / "seq_tags.npy")[7, 0] == OOV_ID
    # standardize stats equal those of the train file alone, computed by hand
    x = np.genfromtxt(train, delimiter=",", skip_header=1, usecols=2, filling_values=0.0)
    lx = signed_log(x)
    assert enc["features"]["x"]["mean"] == pytest.approx(lx.mean(), rel=1e-9)
    assert enc["features"]["x"]["std"] == pytest.approx(lx.std(), rel=1e-9)
    assert enc["features"]["x"]["count"] == 600
    # train values are counted in train only: vocabulary = train values with count >= 2
    c1 = np.genfromtxt(train, delimiter=",", skip_header=1, usecols=3, dtype=str)
    values, counts = np.unique(c1, return_counts=True)
    assert sorted(enc["features"]["c1"]["vocab"]) == sorted(values[counts >= 2].tolist())
    tx = np.genfromtxt(test, delimiter=",", skip_header=1, usecols=2, filling_values=0.0)
    np.testing.assert_allclose(np.load(out / "test" / "num.npy")[:, 1], (signed_log(tx) - lx.mean()) / lx.std(),
                               rtol=1e-5, atol=1e-5)


def test_padding_id_never_used_for_values(tmp_path: Path, explicit_splits) -> None:
    train, valid, test = explicit_splits
    out = tmp_path / "ds"
    prepare(toy_schema(), out, train, valid=valid, test=test)
    for split in ("train", "valid", "test"):
        assert np.load(out / split / "cat.npy").min() >= 1
        seq = np.load(out / split / "seq_tags.npy")
        # every row is a run of ids >= 1 followed by padding zeros
        nonzero = (seq != 0).sum(1)
        np.testing.assert_array_equal(seq != 0, np.arange(3)[None, :] < nonzero[:, None])


def test_encoder_json_round_trip(tmp_path: Path, explicit_splits) -> None:
    train, valid, test = explicit_splits
    out = tmp_path / "ds"
    schema = toy_schema()
    prepare(schema, out, train, valid=valid, test=test)
    enc = Encoder.load(out / "encoder.json", schema)
    got = transform_file(enc, test)
    for key in ("cat", "num", "seq_tags"):
        np.testing.assert_array_equal(got[key], np.load(out / "test" / f"{key}.npy"), err_msg=key)
    # a new raw file: the loaded encoder and the same fit redone in memory agree exactly
    new = write_delimited(tmp_path / "new.csv", toy_rows(50, seed=99))
    a = transform_file(fit_file(train, schema), new)
    b = transform_file(enc, new)
    assert a.keys() == b.keys() == {"cat", "num", "seq_tags"}
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_encoder_load_errors(tmp_path: Path, explicit_splits) -> None:
    train, valid, test = explicit_splits
    out = tmp_path / "ds"
    prepare(toy_schema(), out, train, valid=valid, test=test)
    d = toy_schema_dict()
    d["features"][2]["min_count"] = 5
    with pytest.raises(DataError, match="different schema"):
        Encoder.load(out / "encoder.json", schema_from_dict(d))
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(DataError, match="bad.json"):
        Encoder.load(bad, toy_schema())


def test_multiclass_labels(tmp_path: Path) -> None:
    schema = schema_from_dict({"task": "multiclass", "label": "y",
                               "features": [{"name": "c", "type": "categorical"}]})
    path = write_delimited(tmp_path / "mc.csv", [["10", "a"], ["2", "b"], ["2", "a"], ["0", "b"]], header=["y", "c"])
    enc = fit_file(path, schema)
    assert enc.classes == ["0", "2", "10"]  # numeric order, not string order
    assert enc.feature_map().num_classes == 3 and enc.feature_map().output_dim == 3
    ids, bad = enc.encode_labels(pa.array(["2", "10", "0", "7", None]))
    np.testing.assert_array_equal(ids[:3], [1, 2, 0])
    np.testing.assert_array_equal(bad, [3, 4])


@pytest.mark.parametrize("other_fill", [None, "__other__"])
def test_small_batches_encode_like_large_ones(monkeypatch, other_fill) -> None:
    """A served request (few rows) hashes all its string columns in one pass; the ids must be
    the ones the per-column path gives, with nulls, unseen values, bucketised numerics and a
    column with its own fill value (which falls back to the per-column path)."""
    import mtkd.data.encoder as encoder_mod

    third = {"name": "c", "type": "categorical", **({"fill_na": other_fill} if other_fill else {})}
    schema = schema_from_dict({"label": "y", "features": [
        {"names": ["a", "b"], "type": "categorical", "min_count": 2}, third,
        {"name": "x", "type": "numeric", "transform": "bucketize", "bins": 4}]})
    rng = np.random.default_rng(0)

    def column(n: int, vocab: int) -> pa.Array:
        vals = [None if rng.random() < 0.1 else f"v{rng.integers(vocab)}" for _ in range(n)]
        return pa.array(vals, type=pa.string())

    def batch(n: int, vocab: int) -> pa.RecordBatch:
        return pa.RecordBatch.from_pydict({"y": pa.array(rng.integers(0, 2, n).astype(str)),
                                           "a": column(n, vocab), "b": column(n, vocab), "c": column(n, vocab),
                                           "x": pa.array(rng.normal(size=n))})

    fitter = EncoderFitter(schema)
    fitter.add(batch(2000, 50), np.arange(2000))
    enc = fitter.finish()
    request = batch(37, 80)  # unseen ids v50..v79 among them
    per_column: list[str] = []
    real = encoder_mod.Encoder._categorical
    monkeypatch.setattr(encoder_mod.Encoder, "_categorical",
                        lambda self, col, name, spec: per_column.append(name) or real(self, col, name, spec))
    small = enc.transform(request)
    assert per_column == (["x"] if other_fill is None else ["x", "a", "b", "c"])
    monkeypatch.setattr(encoder_mod, "PARALLEL_ROWS", 0)  # every batch through the per-column path
    large = enc.transform(request)
    np.testing.assert_array_equal(small["cat"], large["cat"])
    assert (small["cat"] == OOV_ID).any() and (small["cat"][:, 3] >= 2).all()  # OOV seen; buckets are ids


# ---------------------------------------------------------------------------- text whitespace
def text_encoder(train: list[str], **feature) -> Encoder:
    schema = schema_from_dict({"label": "y", "features": [
        {"name": "t", "type": "sequence", "separator": " ", "max_len": 6, **feature}]})
    fitter = EncoderFitter(schema)
    fitter.add(text_batch(train), np.arange(len(train)))
    return fitter.finish()


def text_batch(texts: list[str]) -> pa.RecordBatch:
    return pa.RecordBatch.from_pydict({"y": pa.array(["0"] * len(texts)), "t": pa.array(texts, pa.string())})


def seq_ids(enc: Encoder, texts: list[str]) -> np.ndarray:
    return enc.transform(text_batch(texts))["seq_t"]


# tabs, newlines, CR LF, no-break, ideographic and line-separator spaces, runs of them
ODD_SPACES = ["movie\twas\ngood", "movie\xa0was good", " movie\u3000 was\r\n\u2028good\x0b", "movie\u2009\u00a0was\fgood"]


@pytest.mark.parametrize("split_punctuation", [False, True])
def test_text_splits_on_any_unicode_whitespace(split_punctuation: bool) -> None:
    enc = text_encoder(["movie\xa0was\tgood", "movie was good ."], split_punctuation=split_punctuation)
    vocab = enc.state["features"]["t"]["vocab"]
    assert not any(c.isspace() for v in vocab for c in v), vocab  # no space inside or as a token
    want = seq_ids(enc, ["movie was good"])
    assert (want[0, :3] >= 2).all() and (want[0, 3:] == 0).all()
    np.testing.assert_array_equal(seq_ids(enc, ODD_SPACES), np.repeat(want, len(ODD_SPACES), axis=0))
    dot = seq_ids(enc, ["movie was good .", "movie\xa0was\tgood."])[:, :4]
    if split_punctuation:  # "good." -> good . ; the no-break space is no punctuation mark
        np.testing.assert_array_equal(dot, np.repeat(dot[:1], 2, axis=0))
        assert (dot >= 2).all()
    else:
        assert dot[1, 2] == OOV_ID  # "good." is a word of its own, unseen
    assert enc.state["features"]["t"]["whitespace"] == "unicode"  # recorded for predict and serve


def test_old_encoder_json_keeps_its_tokenisation(tmp_path: Path) -> None:
    """An encoder.json written before `whitespace` was recorded splits on the separator alone,
    as the dataset it belongs to was encoded; a new fit records "unicode"."""
    enc = text_encoder(["movie was good", "movie was bad ."], split_punctuation=True)
    enc.save(tmp_path / "new.json")
    old = json.loads((tmp_path / "new.json").read_text())
    old["version"] = 1
    old["features"]["t"].pop("whitespace", None)
    (tmp_path / "old.json").write_text(json.dumps(old))
    new_enc = Encoder.load(tmp_path / "new.json", enc.schema)
    old_enc = Encoder.load(tmp_path / "old.json", enc.schema)
    texts = ["movie\twas good", "movie\xa0was good", "movie was good"]
    movie, was, good = seq_ids(new_enc, ["movie was good"])[0, :3]
    np.testing.assert_array_equal(seq_ids(new_enc, texts)[:, :3], [[movie, was, good]] * 3)
    # the old way: "movie\twas" is one (unseen) token; U+00A0 is a punctuation token (unseen)
    np.testing.assert_array_equal(seq_ids(old_enc, texts)[:, :4],
                                  [[OOV_ID, good, 0, 0], [movie, OOV_ID, was, good], [movie, was, good, 0]])
    old["features"]["t"]["whitespace"] = "klingon"
    (tmp_path / "future.json").write_text(json.dumps(old))
    with pytest.raises(DataError, match="whitespace"):
        Encoder.load(tmp_path / "future.json", enc.schema)


def test_sharer_inherits_owner_max_len(tmp_path: Path) -> None:
    """A sequence sharing another's embedding (the second sentence of a pair) keeps as many tokens
    as its owner unless it sets max_len; the dataset's schema.yaml reloads with the same hash."""
    from mtkd.data.schema import load_schema

    rows = [[str(i % 2), " ".join(f"w{j}" for j in range(i, i + 20)), " ".join(f"w{j}" for j in range(i + 30))]
            for i in range(40)]
    train = write_delimited(tmp_path / "t.csv", rows, header=["y", "q", "d"])
    schema = schema_from_dict({"label": "y", "split": {"ratios": [0.5, 0.25, 0.25]}, "features": [
        {"name": "q", "type": "sequence", "separator": " ", "max_len": 16},
        {"name": "d", "type": "sequence", "separator": " ", "share_embedding": "q"}]})
    prepare(schema, tmp_path / "ds", train)
    assert np.load(tmp_path / "ds" / "train" / "seq_d.npy").shape[1] == 16
    assert json.loads((tmp_path / "ds" / "encoder.json").read_text())["features"]["d"]["max_len"] == 16
    fmap = json.loads((tmp_path / "ds" / "manifest.json").read_text())["feature_map"]["sequences"]
    assert [s["max_len"] for s in fmap] == [16, 16]
    stored = load_schema(tmp_path / "ds" / "schema.yaml")
    assert stored.hash() == schema.hash()
    assert Encoder.load(tmp_path / "ds" / "encoder.json", stored).feature_map().sequences[1].max_len == 16
