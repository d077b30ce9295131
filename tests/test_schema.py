"""Schema validation: unknown keys and wrong types name the key and the file; rules between keys."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from conftest import PRESETS, toy_schema, toy_schema_dict, write_yaml
from mtkd.data.schema import load_schema, schema_from_dict
from mtkd.errors import ConfigError


def _error(tmp_path: Path, data: object, name: str = "schema.yaml") -> str:
    path = write_yaml(tmp_path / name, data)
    with pytest.raises(ConfigError) as exc:
        load_schema(path)
    msg = str(exc.value)
    assert str(path) in msg, msg
    return msg


def test_valid_schema_and_views(toy_schema_file: Path) -> None:
    s = load_schema(toy_schema_file)
    assert [n for n, _ in s.specs()] == ["rid", "x", "c1", "c2", "tags"]
    assert [n for n, _ in s.categorical()] == ["c1", "c2"]
    assert [n for n, _ in s.numeric()] == ["rid", "x"]
    assert [n for n, _ in s.sequences()] == ["tags"]
    assert s.input_columns() == ["label", "rid", "x", "c1", "c2", "tags"]
    assert dict(s.specs())["x"].transforms == ["log", "standardize"]
    assert dict(s.specs())["tags"].max_len == 3


def test_bucketized_numeric_is_stored_as_categorical() -> None:
    d = toy_schema_dict()
    d["features"][0] = {"name": "rid", "type": "numeric", "transform": ["log", "bucketize"], "bins": 4}
    s = schema_from_dict(d)
    assert [n for n, _ in s.categorical()] == ["rid", "c1", "c2"]
    assert [n for n, _ in s.numeric()] == ["x"]


def test_unknown_top_level_key(tmp_path: Path) -> None:
    msg = _error(tmp_path, toy_schema_dict(lable="y"))
    assert "lable" in msg and "unknown key" in msg


def test_unknown_feature_key(tmp_path: Path) -> None:
    d = toy_schema_dict()
    d["features"][2]["min_cout"] = 5
    msg = _error(tmp_path, d)
    assert "features[2].min_cout" in msg and "unknown key" in msg


def test_unknown_split_key(tmp_path: Path) -> None:
    msg = _error(tmp_path, toy_schema_dict(split={"ratios": [0.8, 0.2], "sed": 1}))
    assert "split.sed" in msg


@pytest.mark.parametrize(
    "feature, key",
    [
        ({"name": "c1", "type": "categorical", "min_count": "many"}, "min_count"),
        ({"name": "c1", "type": "categorical", "min_count": 0}, "min_count"),
        ({"name": "c1", "type": "embedding"}, "type"),
        ({"name": "x", "type": "numeric", "transform": "sqrt"}, "transform"),
        ({"name": "x", "type": "numeric", "transform": "bucketize", "bins": 1}, "bins"),
        ({"name": "t", "type": "sequence", "max_len": "long"}, "max_len"),
        ({"names": "c1", "type": "categorical"}, "names"),
    ],
)
def test_wrong_types_name_the_key(tmp_path: Path, feature: dict, key: str) -> None:
    msg = _error(tmp_path, toy_schema_dict(features=[feature]))
    assert f"features[0].{key}" in msg, msg


def test_wrong_top_level_types(tmp_path: Path) -> None:
    assert "format" in _error(tmp_path, toy_schema_dict(format="xlsx"))
    assert "header" in _error(tmp_path, toy_schema_dict(header="sometimes"))
    assert "features" in _error(tmp_path, toy_schema_dict(features="c1"))


def test_missing_required_key(tmp_path: Path) -> None:
    d = toy_schema_dict()
    del d["features"]
    msg = _error(tmp_path, d)
    assert "features" in msg and "required" in msg


@pytest.mark.parametrize(
    "feature",
    [
        {"name": "c1", "names": ["c2"], "type": "categorical"},
        {"type": "categorical"},
        {"names": [], "type": "categorical"},
    ],
)
def test_name_and_names_are_exclusive(tmp_path: Path, feature: dict) -> None:
    msg = _error(tmp_path, toy_schema_dict(features=[feature]))
    assert "features[0]" in msg and "name" in msg


@pytest.mark.parametrize("ftype", ["categorical", "sequence"])
@pytest.mark.parametrize("transform", ["log", "standardize", "bucketize", ["log", "standardize"]])
def test_transforms_only_on_numeric(tmp_path: Path, ftype: str, transform: object) -> None:
    msg = _error(tmp_path, toy_schema_dict(features=[{"name": "c1", "type": ftype, "transform": transform}]))
    assert "numeric" in msg and "features[0]" in msg


def test_transform_order_rules(tmp_path: Path) -> None:
    bad_order = {"name": "x", "type": "numeric", "transform": ["bucketize", "log"]}
    assert "last" in _error(tmp_path, toy_schema_dict(features=[bad_order]))
    with_none = {"name": "x", "type": "numeric", "transform": ["none", "log"]}
    assert "none" in _error(tmp_path, toy_schema_dict(features=[with_none]))
    ok = {"name": "x", "type": "numeric", "transform": ["log", "standardize"]}
    assert schema_from_dict(toy_schema_dict(features=[ok])).features[0].transforms == ["log", "standardize"]


def test_cross_key_rules(tmp_path: Path) -> None:
    dup = [{"name": "c1", "type": "categorical"}, {"names": ["c1", "c2"], "type": "categorical"}]
    assert "more than once" in _error(tmp_path, toy_schema_dict(features=dup))
    assert "label" in _error(tmp_path, toy_schema_dict(features=[{"name": "label", "type": "categorical"}]))
    assert "columns" in _error(tmp_path, toy_schema_dict(header=False))
    assert "columns" in _error(tmp_path, toy_schema_dict(format="libfm"))
    msg = _error(tmp_path, toy_schema_dict(header=False, columns=["label", "rid", "x", "c1"]))
    assert "c2" in msg and "tags" in msg
    assert "at least one feature" in _error(tmp_path, toy_schema_dict(features=[]))


def test_yaml_problems_name_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match="nope.yaml: file not found"):
        load_schema(missing)
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    with pytest.raises(ConfigError, match="empty"):
        load_schema(empty)
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: toy\nfeatures: [a, b\nlabel: y\n")
    with pytest.raises(ConfigError, match=r"broken\.yaml: line \d+") as exc:
        load_schema(broken)
    assert "not valid YAML" in str(exc.value)
    listy = write_yaml(tmp_path / "list.yaml", [1, 2])
    with pytest.raises(ConfigError, match="mapping"):
        load_schema(listy)


def test_hash_ignores_name_and_follows_encoding_settings() -> None:
    a = toy_schema()
    assert a.hash() == toy_schema(name="other").hash()
    d = toy_schema_dict()
    d["features"][2]["min_count"] = 3
    assert schema_from_dict(d).hash() != a.hash()


@pytest.mark.parametrize("preset", sorted(p.name for p in PRESETS.glob("*.yaml")))
def test_presets_validate(preset: str) -> None:
    s = load_schema(PRESETS / preset)
    assert s.specs() and s.task == ("multiclass" if "multiclass" in preset else "binary")


@pytest.mark.parametrize("names", [{"name": "words"}, {"names": ["words", "more"]}])
def test_empty_separator_names_the_feature(tmp_path: Path, names: dict) -> None:
    """`separator: ""` made prepare fail deep in Arrow ("Empty separator")."""
    msg = _error(tmp_path, toy_schema_dict(features=[{**names, "type": "sequence", "separator": ""}]))
    assert "features[0]" in msg and "'words'" in msg and "separator is empty" in msg, msg


def test_sharer_defaults_to_owner_max_len() -> None:
    def spec(*features: dict) -> dict:
        return dict(schema_from_dict({"features": list(features)}).specs())

    owner = {"name": "q", "type": "sequence", "separator": " ", "max_len": 48}
    assert spec(owner, {"names": ["d", "e"], "type": "sequence", "share_embedding": "q"})["e"].max_len == 48
    assert spec(owner, {"name": "d", "type": "sequence", "share_embedding": "q", "max_len": 7})["d"].max_len == 7
    assert spec(owner, {"name": "d", "type": "sequence", "share_embedding": "q", "max_len": 10})["d"].max_len == 10
    item = {"name": "item", "type": "categorical"}  # a history of items shares a categorical: no max_len there
    assert spec(item, {"name": "hist", "type": "sequence", "share_embedding": "item"})["hist"].max_len == 10
    # the hash follows the length used: inherited or written out, the same; no sharer, unchanged
    inherited = schema_from_dict({"features": [owner, {"name": "d", "type": "sequence", "share_embedding": "q"}]})
    written = schema_from_dict({"features": [owner, {"name": "d", "type": "sequence", "share_embedding": "q",
                                                     "max_len": 48}]})
    assert inherited.hash() == written.hash()


@pytest.mark.parametrize("preset, digest", [("mrpc.yaml", "8f92ea365d9257ef"), ("rte.yaml", "36d24c2852fa7cc6"),
                                            ("sst2.yaml", "a923aafc3254262b"), ("criteo.yaml", "e11e98b6137955da")])
def test_preset_hashes_are_stable(preset: str, digest: str) -> None:
    """Datasets prepared before a setting was added must keep matching their schema."""
    assert load_schema(PRESETS / preset).hash() == digest


@pytest.mark.parametrize("extra, needle", [
    ({"group": "y"}, "column 'y' is both the label and a group column"),
    ({"group": "c"}, "column 'c' is both the feature and a group column"),
    ({"scores": ["x"]}, "column 'x' is both the feature and a score column"),
    ({"scores": ["s", "s"]}, "score column 's' is listed twice"),
    ({"delimiter": ";;"}, "delimiter ';;': must be one character"),
    ({"delimiter": ""}, "delimiter '': must be one character"),
    ({"header": False, "columns": ["y", "c", "c", "x"]}, "`columns:` names ['c'] more than once"),
    ({"features": [{"name": "x", "type": "numeric", "fill_na": "abc"}]}, "fill_na 'abc': a numeric feature's"),
])
def test_a_column_has_one_role_and_a_delimiter_one_character(extra, needle) -> None:
    """Each of these reached Arrow or Python's csv module and ended in a KeyError / TypeError traceback."""
    base = {"label": "y", "features": [{"name": "c", "type": "categorical"}, {"name": "x", "type": "numeric"}]}
    with pytest.raises(ConfigError, match=re.escape(needle)):
        schema_from_dict({**base, **extra})
