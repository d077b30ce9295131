"""Feature hashing (`hash_buckets`): ids without a vocabulary, through prepare, training and serving."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from conftest import toy_rows, toy_schema_dict, write_delimited
from mtkd.data.encoder import FIRST_ID, OOV_ID, Encoder, EncoderFitter, categorical_fill
from mtkd.data.hashing import hash_strings
from mtkd.data.schema import schema_from_dict
from mtkd.errors import ConfigError


def _schema(**cat):
    return schema_from_dict({"label": "y", "features": [
        {"name": "c", "type": "categorical", "hash_buckets": 50, **cat},
        {"name": "tags", "type": "sequence", "hash_buckets": 30, "max_len": 4},
        {"name": "d", "type": "categorical", "share_embedding": "c"}]})


def _batch(c: list, tags: list, d: list) -> pa.RecordBatch:
    return pa.RecordBatch.from_pydict({"y": pa.array(["0"] * len(c)), "c": pa.array(c, pa.string()),
                                       "tags": pa.array(tags, pa.string()), "d": pa.array(d, pa.string())})


def test_hashed_ids_need_no_vocabulary_and_give_unseen_values_a_bucket(tmp_path: Path) -> None:
    schema = _schema()
    fitter = EncoderFitter(schema)
    fitter.add(_batch(["a", "b", None], ["x|y", "", "z"], ["a", "q", None]), np.arange(3))
    enc = fitter.finish()
    state = enc.state["features"]
    assert state["c"] == {"type": "categorical", "hash_buckets": 50, "fill_na": categorical_fill(schema.features[0])}
    assert "vocab" not in state["tags"] and state["d"]["share_embedding"] == "c"
    assert enc.vocab_size("c") == enc.vocab_size("d") == 50 + FIRST_ID and enc.vocab_size("tags") == 30 + FIRST_ID
    values = ["a", "never-seen", None]
    out = enc.transform(_batch(values, ["x|never|y", "", None], ["never-seen", "a", "b"]))
    filled = pa.array([v if v is not None else categorical_fill(schema.features[0]) for v in values])
    want = (hash_strings(filled) % np.uint64(50)).astype(np.int64) + FIRST_ID
    np.testing.assert_array_equal(out["cat"][:, 0], want)  # the unseen value has a bucket, not OOV
    assert (out["cat"] != OOV_ID).all() and out["cat"][0, 1] == out["cat"][1, 0]  # d shares c's buckets: "a"
    seq = out["seq_tags"]
    assert seq.shape == (3, 4) and (seq[0, :3] >= FIRST_ID).all() and (seq[0, :3] < 30 + FIRST_ID).all()
    assert (seq[0, 3] == 0) and (seq[1:] == 0).all()  # padding stays 0
    # the encoder round-trips through encoder.json, and a large batch (thread pool path) agrees
    (tmp_path / "encoder.json").write_text(json.dumps(enc.state))
    again = Encoder.load(tmp_path / "encoder.json", schema)
    big = again.transform(_batch(values * 2000, ["x|y"] * 6000, ["a"] * 6000))["cat"]  # >= 4,096 rows
    np.testing.assert_array_equal(big[:3], enc.transform(_batch(values, ["x|y"] * 3, ["a"] * 3))["cat"])


@pytest.mark.parametrize("feature,match", [
    ({"name": "x", "type": "numeric", "hash_buckets": 8}, "categorical and sequence"),
    ({"name": "c", "type": "categorical", "hash_buckets": 8, "min_count": 3}, "min_count needs a vocabulary"),
    ({"name": "c", "type": "categorical", "hash_buckets": 0}, "greater than or equal to 1"),
])
def test_hash_buckets_settings_that_cannot_work_are_refused(feature, match) -> None:
    with pytest.raises((ConfigError, ValueError), match=match):
        schema_from_dict({"label": "y", "features": [feature]})
    with pytest.raises((ConfigError, ValueError), match="set hash_buckets on the owner"):
        schema_from_dict({"label": "y", "features": [{"name": "c", "type": "categorical"},
                                                     {"name": "d", "type": "categorical", "share_embedding": "c",
                                                      "hash_buckets": 4}]})


def test_schema_hash_ignores_settings_left_at_their_defaults() -> None:
    base = {"label": "y", "features": [{"name": "c", "type": "categorical"}]}
    plain = schema_from_dict(base).hash()
    explicit = schema_from_dict({**base, "header": True, "split": {"ratios": [0.8, 0.1, 0.1]},
                                 "features": [{"name": "c", "type": "categorical", "min_count": 1}]}).hash()
    assert plain == explicit  # a new version's new settings, left at their defaults, change nothing
    assert schema_from_dict({**base, "features": [{"name": "c", "type": "categorical", "hash_buckets": 9}]}).hash() \
        != plain


def test_hashed_dataset_trains_exports_and_scores_unseen_ids(tmp_path: Path, capsys) -> None:
    from mtkd.config import load_train_config
    from mtkd.data.prepare import prepare
    from mtkd.data.store import Dataset
    from mtkd.serve.export import export_run
    from mtkd.serve.scorer import Scorer
    from mtkd.train.run import train_run

    d = toy_schema_dict()
    d["features"][2] = {"names": ["c1", "c2"], "type": "categorical", "hash_buckets": 16}
    d["features"][3] = {"name": "tags", "type": "sequence", "separator": "|", "max_len": 3, "hash_buckets": 8}
    schema = schema_from_dict(d)
    raw = write_delimited(tmp_path / "toy.csv", toy_rows(1500, seed=3))
    prepare(schema, tmp_path / "ds", raw)
    fmap = Dataset(tmp_path / "ds").feature_map
    assert [f.vocab_size for f in fmap.categorical] == [16 + FIRST_ID] * 2 and fmap.sequences[0].vocab_size == 10
    from mtkd.cli import main

    assert main(["data", "info", str(tmp_path / "ds")]) == 0
    shown = " ".join(capsys.readouterr().out.split())
    assert "c1 │ categorical │ hashed, 16 buckets" in shown and "hashed, 8 buckets, max_len 3" in shown
    cfg = load_train_config(None, ["epochs=1", "batch_size=256", "params.embedding_dim=4", "device=cpu"], model="dnn")
    train_run(cfg, tmp_path / "ds", tmp_path / "run", progress=False, log=lambda s: None)
    export_run(tmp_path / "run", tmp_path / "export")
    p = Scorer.open(tmp_path / "export").score_batch(
        Scorer.open(tmp_path / "export").rows_to_batch([{"c1": "brand-new", "c2": "3", "x": 1.5, "tags": "t1|zz"}]))
    assert p.shape == (1,) and 0 < float(p[0]) < 1
