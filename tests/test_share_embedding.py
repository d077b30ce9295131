"""share_embedding: one vocabulary and one embedding table for several fields (the two
sentences of a pair; a history of items and the item), from the schema to the model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from mtkd.data.batch import Batch
from mtkd.data.feature_map import CategoricalField, FeatureMap, SequenceField
from mtkd.data.prepare import prepare
from mtkd.data.schema import schema_from_dict
from mtkd.errors import ConfigError
from mtkd.models import build_model
from mtkd.models.embedding import FeatureEmbedding


def test_shared_vocabulary_counts_both_columns(tmp_path: Path) -> None:
    """A word seen only in the second column is in the vocabulary, and min_count counts both."""
    (tmp_path / "t.csv").write_text("label,q,d\n1,Café!,zebra\n0,café,zebra\n1,x,Zebra.\n")
    (tmp_path / "v.csv").write_text("label,q,d\n1,yak,yak\n")
    schema = schema_from_dict({"task": "binary", "label": "label", "features": [
        {"name": "q", "type": "sequence", "separator": " ", "min_count": 2, "lowercase": True,
         "split_punctuation": True},
        {"name": "d", "type": "sequence", "separator": " ", "share_embedding": "q", "lowercase": True,
         "split_punctuation": True}]})
    prepare(schema, tmp_path / "ds", tmp_path / "t.csv", valid=tmp_path / "v.csv", test=tmp_path / "v.csv")
    vocab = json.loads((tmp_path / "ds" / "encoder.json").read_text())["features"]["q"]["vocab"]
    assert vocab == ["zebra", "café"]  # "." and "!" and "x" seen once; "zebra" 3 times, in column d only
    fmap = json.loads((tmp_path / "ds" / "manifest.json").read_text())["feature_map"]["sequences"]
    assert fmap[1] == {"name": "d", "vocab_size": 4, "max_len": 10, "share": "q"}


SEQ = {"type": "sequence"}


@pytest.mark.parametrize("features,message", [
    ([{"name": "a", **SEQ, "share_embedding": "nope"}], "not another feature"),
    ([{"name": "a", **SEQ, "share_embedding": "b"}, {"name": "b", **SEQ, "share_embedding": "c"},
      {"name": "c", **SEQ}], "must name the table's owner"),
    ([{"name": "a", "type": "categorical", "share_embedding": "c"}, {"name": "c", **SEQ}],
     "let a sequence share a categorical"),
    ([{"name": "a", **SEQ, "share_embedding": "b", "min_count": 3}, {"name": "b", **SEQ, "min_count": 2}],
     "min_count"),
    ([{"name": "a", "type": "categorical", "lowercase": True}], "sequence"),
])
def test_share_embedding_and_text_options_are_checked(features: list, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        schema_from_dict({"features": features})


def test_shared_tables_in_the_embedding() -> None:
    fmap = FeatureMap(categorical=(CategoricalField("item", 7), CategoricalField("user", 5),
                                   CategoricalField("last_item", 7, share="item")),
                      sequences=(SequenceField("s1", 9, 4), SequenceField("s2", 9, 3, share="s1")))
    emb = FeatureEmbedding(fmap, 4, init_std=0.1)
    assert emb.table.num_embeddings == 12 and emb.offsets.tolist() == [0, 7, 0] and len(emb.sequences) == 1
    ids = torch.tensor([[3, 1, 0, 0]])
    batch = Batch(label=torch.zeros(1), index=torch.zeros(1), cat=torch.tensor([[3, 2, 3]]),
                  seq={"s1": ids, "s2": ids[:, :3]})
    e = emb(batch)
    torch.testing.assert_close(e[:, 0], e[:, 2])  # item 3 and last_item 3: one row
    torch.testing.assert_close(e[:, 3], e[:, 4])  # the same tokens pool to the same vector
    assert fmap.total_vocab == 7 + 5 + 9


def test_history_shares_the_item_table(tmp_path: Path) -> None:
    """A sequence of clicked items reads the categorical item's vocabulary and rows: an item seen
    only in histories gets an id, the same item has one id in both, and a model trains on it."""
    rows = ["1,u1,i1,i2|i3", "0,u2,i2,i1", "1,u1,i4,i1|i2|i3|i9", "0,u3,i1,"]
    (tmp_path / "t.csv").write_text("\n".join(["label,user,item,history"] + rows * 5) + "\n")
    schema = schema_from_dict({"label": "label", "features": [
        {"names": ["user", "item"], "type": "categorical"},
        {"name": "history", "type": "sequence", "max_len": 3, "share_embedding": "item"}]})
    prepare(schema, tmp_path / "ds", tmp_path / "t.csv", valid=tmp_path / "t.csv", test=tmp_path / "t.csv")
    enc = json.loads((tmp_path / "ds" / "encoder.json").read_text())["features"]
    vocab = enc["item"]["vocab"]
    # counts over both columns: i1 10 as item + 10 in histories, i2 5 + 10, i3 10 in histories only,
    # then i4 (5, as item only) and i9 (5, in histories only)
    assert vocab == ["i1", "i2", "i3", "i4", "i9"]
    cat = np.load(tmp_path / "ds" / "train" / "cat.npy")
    hist = np.load(tmp_path / "ds" / "train" / "seq_history.npy")
    assert hist[1, 0] == cat[0, 1]  # row 2's history "i1" has row 1's item id
    fmap = json.loads((tmp_path / "ds" / "manifest.json").read_text())["feature_map"]
    assert fmap["sequences"][0]["share"] == "item"
    fm = FeatureMap.from_dict(fmap)
    emb = FeatureEmbedding(fm, 4, init_std=0.1)
    assert len(emb.sequences) == 0 and emb.table.num_embeddings == fm.categorical[0].vocab_size + \
        fm.categorical[1].vocab_size
    batch = Batch(label=torch.zeros(2), index=torch.arange(2), cat=torch.from_numpy(cat[:2]).long(),
                  seq={"history": torch.from_numpy(hist[:2]).long()})
    e = emb(batch)
    torch.testing.assert_close(e[1, 2], e[0, 1])  # history [i1] pools to item i1's vector
    model = build_model("deepfm", fm)
    model(batch).logits.sum().backward()
    assert model.embedding.table.weight.grad is not None

