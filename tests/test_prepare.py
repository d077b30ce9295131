"""`mtkd data prepare`: splits, the store round trip, bad inputs through the CLI, atomicity, presets."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import mtkd.data.prepare as P
import mtkd.data.readers as R
from conftest import (PRESETS, TOY_COLUMNS, leftovers, toy_rows, toy_schema, toy_schema_dict, write_delimited,
                      write_yaml)
from mtkd.data.prepare import prepare
from mtkd.data.store import Dataset
from mtkd.data.schema import schema_from_dict
from mtkd.errors import DataError, MtkdError

N = 2000


@pytest.fixture
def big_csv(tmp_path: Path) -> Path:
    return write_delimited(tmp_path / "raw" / "big.csv", toy_rows(N, seed=3))


def rids(out: Path, split: str) -> np.ndarray:
    """The `rid` column (numeric, no transform: the row number in the file) of a split."""
    return np.load(out / split / "num.npy")[:, 0].astype(np.int64)


def load_split(out: Path, split: str) -> dict[str, np.ndarray]:
    return {p.stem: np.load(p) for p in sorted((out / split).glob("*.npy"))}


# ---------------------------------------------------------------------------- splits
def test_explicit_files(tmp_path: Path) -> None:
    files = {s: write_delimited(tmp_path / f"{s}.csv", toy_rows(n, seed=i, start=k))
             for i, (s, n, k) in enumerate([("train", 500, 0), ("valid", 120, 500), ("test", 80, 620)])}
    out = tmp_path / "ds"
    m = prepare(toy_schema(), out, files["train"], valid=files["valid"], test=files["test"])
    assert {s: m["splits"][s]["rows"] for s in m["splits"]} == {"train": 500, "valid": 120, "test": 80}
    np.testing.assert_array_equal(rids(out, "train"), np.arange(500))
    np.testing.assert_array_equal(rids(out, "valid"), np.arange(500, 620))
    np.testing.assert_array_equal(rids(out, "test"), np.arange(620, 700))


def test_random_split_is_seeded(tmp_path: Path, big_csv: Path) -> None:
    a, b, c = (tmp_path / n for n in ("a", "b", "c"))
    prepare(toy_schema(), a, big_csv, seed=1)
    prepare(toy_schema(), b, big_csv, seed=1)
    prepare(toy_schema(), c, big_csv, seed=2)
    parts = [rids(a, s) for s in ("train", "valid", "test")]
    for s, r in zip(("train", "valid", "test"), parts):
        np.testing.assert_array_equal(r, rids(b, s))
        assert np.all(np.diff(r) > 0)  # file order kept inside a split
    assert not np.array_equal(parts[0], rids(c, "train"))
    np.testing.assert_array_equal(np.sort(np.concatenate(parts)), np.arange(N))  # disjoint, complete
    fractions = np.array([len(r) for r in parts]) / N
    np.testing.assert_allclose(fractions, [0.8, 0.1, 0.1], atol=0.03)


def test_random_split_independent_of_block_size(tmp_path: Path, big_csv: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    big, small = tmp_path / "big_blocks", tmp_path / "small_blocks"
    prepare(toy_schema(), big, big_csv, seed=5, block_size=64 << 20)
    monkeypatch.setattr(R, "CHUNK_ROWS", 37)  # many blocks of ~37 rows each
    prepare(toy_schema(), small, big_csv, seed=5, block_size=1024)
    assert json.loads((big / "encoder.json").read_text())["features"]["c1"] == \
        json.loads((small / "encoder.json").read_text())["features"]["c1"]
    for split in ("train", "valid", "test"):
        x, y = load_split(big, split), load_split(small, split)
        assert x.keys() == y.keys()
        for key in x:
            if key == "num":  # standardisation statistics merged over blocks: equal up to rounding
                np.testing.assert_allclose(x[key], y[key], rtol=1e-6, atol=1e-6)
            else:
                np.testing.assert_array_equal(x[key], y[key], err_msg=f"{split}/{key}")


@pytest.mark.parametrize("chunk", [None, 64])
def test_ordered_split(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chunk: int | None) -> None:
    if chunk:
        monkeypatch.setattr(R, "CHUNK_ROWS", chunk)
    path = write_delimited(tmp_path / "o.csv", toy_rows(1000, seed=4))
    out = tmp_path / "ds"
    prepare(toy_schema(), out, path, ordered=True, block_size=2048 if chunk else 1 << 20)
    np.testing.assert_array_equal(rids(out, "train"), np.arange(800))
    np.testing.assert_array_equal(rids(out, "valid"), np.arange(800, 900))
    np.testing.assert_array_equal(rids(out, "test"), np.arange(900, 1000))


def test_ordered_split_with_blank_lines(tmp_path: Path) -> None:
    """Blank lines are not rows: the 80/10/10 boundaries count data rows only."""
    path = write_delimited(tmp_path / "o.csv", toy_rows(100, seed=4))
    lines = path.read_text().split("\n")
    path.write_text("\n".join(line + ("\n" if i % 7 == 3 else "") for i, line in enumerate(lines)))
    out = tmp_path / "ds"
    prepare(toy_schema(), out, path, ordered=True)
    np.testing.assert_array_equal(rids(out, "train"), np.arange(80))
    np.testing.assert_array_equal(rids(out, "test"), np.arange(90, 100))


def test_ordered_split_via_cli_and_schema_default(tmp_path: Path, run_cli) -> None:
    path = write_delimited(tmp_path / "o.csv", toy_rows(200, seed=4))
    rc, _, err = run_cli("data", "prepare", "--schema", write_yaml(tmp_path / "s.yaml", toy_schema_dict()),
                         "--train", path, "--ordered", "--split", "0.5,0.25,0.25", "--out", tmp_path / "a")
    assert rc == 0, err
    np.testing.assert_array_equal(rids(tmp_path / "a", "valid"), np.arange(100, 150))
    d = toy_schema_dict(split={"ratios": [0.6, 0.4], "ordered": True})
    rc, _, err = run_cli("data", "prepare", "--schema", write_yaml(tmp_path / "t.yaml", d),
                         "--train", path, "--test", path, "--out", tmp_path / "b")
    assert rc == 0, err
    np.testing.assert_array_equal(rids(tmp_path / "b", "train"), np.arange(120))
    np.testing.assert_array_equal(rids(tmp_path / "b", "valid"), np.arange(120, 200))
    np.testing.assert_array_equal(rids(tmp_path / "b", "test"), np.arange(200))


def test_train_and_test_files_with_two_ratios(tmp_path: Path, run_cli, toy_schema_file: Path) -> None:
    a = write_delimited(tmp_path / "a.csv", toy_rows(1000, seed=1))
    b = write_delimited(tmp_path / "b.csv", toy_rows(300, seed=2, start=5000))
    out = tmp_path / "ds"
    rc, _, err = run_cli("data", "prepare", "--schema", toy_schema_file, "--train", a, "--test", b,
                         "--split", "0.8,0.2", "--out", out)
    assert rc == 0, err
    tr, va = rids(out, "train"), rids(out, "valid")
    np.testing.assert_array_equal(np.sort(np.concatenate([tr, va])), np.arange(1000))
    assert 0.75 < len(tr) / 1000 < 0.85
    np.testing.assert_array_equal(rids(out, "test"), np.arange(5000, 5300))


def test_pooled_train_files(tmp_path: Path, run_cli, toy_schema_file: Path) -> None:
    a = write_delimited(tmp_path / "a.csv", toy_rows(700, seed=1))
    b = write_delimited(tmp_path / "b.csv", toy_rows(500, seed=2, start=700))
    out = tmp_path / "ds"
    rc, _, err = run_cli("data", "prepare", "--schema", toy_schema_file, "--train", a, "--train", b, "--out", out)
    assert rc == 0, err
    m = json.loads((out / "manifest.json").read_text())
    assert sum(s["rows"] for s in m["splits"].values()) == 1200
    allr = np.concatenate([rids(out, s) for s in ("train", "valid", "test")])
    np.testing.assert_array_equal(np.sort(allr), np.arange(1200))
    assert m["inputs"][0]["files"] == [str(a), str(b)]


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--split", "0.8,0.2"], "--split has 2 ratios"),
        (["--split", "0.5,0.3,0.1,0.1"], "--split has 4 ratios"),
        (["--split", "0.8,0.1,0.2"], "sum to 1"),
        (["--split", "0.8,abc,0.1"], "comma-separated numbers"),
        (["--valid", "V", "--test", "V", "--split", "0.9,0.1"], "--split has 2 ratios"),
    ],
)
def test_bad_ratios(tmp_path: Path, run_cli, toy_csv: Path, toy_schema_file: Path, args, needle) -> None:
    args = [str(toy_csv) if a == "V" else a for a in args]
    rc, _, err = run_cli("data", "prepare", "--schema", toy_schema_file, "--train", toy_csv, *args,
                         "--out", tmp_path / "ds")
    assert rc == 2 and needle in err and "Traceback" not in err, err
    assert leftovers(tmp_path, "ds") == []


def test_schema_ratios_are_checked_and_give_a_file_split_share_to_train(tmp_path: Path, run_cli) -> None:
    """The schema's ratios: three serve fewer splits (a split given as a file hands its share to
    train: 0.8/0.1/0.1 with --test is 0.9/0.1); two where three are needed is an error naming the
    schema, not a silent 0.8/0.1/0.1; a split left with no rows is an error naming it."""
    a = write_delimited(tmp_path / "a.csv", toy_rows(1000, seed=1))
    b = write_delimited(tmp_path / "b.csv", toy_rows(300, seed=2, start=5000))
    schema = write_yaml(tmp_path / "s.yaml", toy_schema_dict(split={"ratios": [0.8, 0.1, 0.1], "seed": 3}))
    rc, _, err = run_cli("data", "prepare", "--schema", schema, "--train", a, "--test", b, "--out", tmp_path / "ds")
    assert rc == 0, err
    assert json.loads((tmp_path / "ds/manifest.json").read_text())["inputs"][0]["ratios"] == [0.9, 0.1]
    two = write_yaml(tmp_path / "two.yaml", toy_schema_dict(split={"ratios": [0.8, 0.2]}))
    rc, _, err = run_cli("data", "prepare", "--schema", two, "--train", a, "--out", tmp_path / "ds2")
    assert rc == 2 and "the schema's split.ratios has 2 ratios" in err and "split: {ratios: [0.8, 0.1, 0.1]}" in err
    tiny = write_delimited(tmp_path / "tiny.csv", toy_rows(2, seed=1))
    rc, _, err = run_cli("data", "prepare", "--schema", schema, "--train", tiny, "--out", tmp_path / "ds3")
    assert rc == 2 and "split got none of the 2 rows" in err, err
    assert leftovers(tmp_path, "ds2") == [] and leftovers(tmp_path, "ds3") == []


def test_out_is_not_the_current_directory(tmp_path: Path, run_cli, toy_csv: Path, toy_schema_file: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    here = tmp_path / "empty"
    here.mkdir()
    monkeypatch.chdir(here)
    rc, _, err = run_cli("data", "prepare", "--schema", toy_schema_file, "--train", toy_csv, "--out", ".")
    assert rc == 2 and "is the current directory" in err and "--out data/NAME" in err
    assert list(here.iterdir()) == []


def test_dataset_files_are_readable_by_others_as_the_umask_says(tmp_path: Path, toy_csv: Path) -> None:
    """Shared datasets: manifest, encoder and schema get the umask's mode like the arrays, not 0600."""
    old = os.umask(0o022)
    try:
        prepare(toy_schema(), tmp_path / "ds", toy_csv)
    finally:
        os.umask(old)
    modes = {p.name: p.stat().st_mode & 0o777 for p in (tmp_path / "ds").rglob("*") if p.is_file()}
    assert set(modes.values()) == {0o644}, modes


# ---------------------------------------------------------------------------- store
def test_store_round_trip(tmp_path: Path, toy_csv: Path) -> None:
    out = tmp_path / "ds"
    m = prepare(toy_schema(), out, toy_csv, seed=9)
    raw = np.genfromtxt(toy_csv, delimiter=",", skip_header=1, dtype=str)
    label = raw[:, 0].astype(np.float32)
    enc = json.loads((out / "encoder.json").read_text())
    c2_ids = {v: i + 2 for i, v in enumerate(enc["features"]["c2"]["vocab"])}
    assert m == json.loads((out / "manifest.json").read_text())
    assert set(m["splits"]) == {"train", "valid", "test"}
    for split, info in m["splits"].items():
        arrays = {p.stem: np.load(p, mmap_mode="r") for p in (out / split).glob("*.npy")}
        assert set(arrays) == {"label", "cat", "num", "seq_tags"}
        assert all(isinstance(a, np.memmap) for a in arrays.values())
        rows = info["rows"]
        assert arrays["label"].shape == (rows,) and arrays["label"].dtype == np.float32
        assert arrays["cat"].shape == (rows, 2) and arrays["cat"].dtype == np.int32
        assert arrays["num"].shape == (rows, 2) and arrays["num"].dtype == np.float32
        assert arrays["seq_tags"].shape == (rows, 3)
        r = np.asarray(arrays["num"][:, 0]).astype(np.int64)  # rid: which file rows this split holds
        np.testing.assert_array_equal(arrays["label"], label[r])
        np.testing.assert_array_equal(arrays["cat"][:, 1], [c2_ids[v] for v in raw[r, 4]])
        assert info["label_rate"] == pytest.approx(float(label[r].mean()), abs=1e-6)
        for key, meta in info["arrays"].items():
            assert meta["shape"][0] == rows and meta["file"] == f"{key}.npy"
    assert sum(s["rows"] for s in m["splits"].values()) == 1000
    assert m["vocab_sizes"] == {"c1": len(enc["features"]["c1"]["vocab"]) + 2,
                                "c2": len(enc["features"]["c2"]["vocab"]) + 2,
                                "tags": len(enc["features"]["tags"]["vocab"]) + 2}
    assert m["schema_hash"] == toy_schema().hash() and len(m["checksum"]) == 32
    assert m["feature_map"]["numeric"] == ["rid", "x"]
    assert (out / "schema.yaml").exists()
    ds = Dataset(out)
    assert ds.split_names == ["train", "valid", "test"] and ds.checksum == m["checksum"]
    assert len(ds.split("valid")) == m["splits"]["valid"]["rows"]
    assert ds.feature_map.num_fields == 5
    with pytest.raises(DataError, match="no split 'extra'"):
        ds.split("extra")


def test_verify_detects_corruption(tmp_path: Path, toy_csv: Path, run_cli) -> None:
    out = tmp_path / "ds"
    prepare(toy_schema(), out, toy_csv)
    assert Dataset(out).verify() == []
    rc, text, _ = run_cli("data", "info", out, "--verify")
    assert rc == 0 and "verified: all 12 array files and encoder.json match their checksums" in " ".join(text.split())
    enc = out / "encoder.json"
    good = enc.read_text()
    enc.write_text(good.replace('"mean":', '"mean":1', 1))  # a changed statistic, the arrays untouched
    assert Dataset(out).verify() == ["encoder.json"]
    rc, _, err = run_cli("data", "info", out, "--verify")
    assert rc == 2 and "encoder.json" in err
    enc.write_text(good)
    path = out / "valid" / "cat.npy"
    data = bytearray(path.read_bytes())
    data[-3] ^= 0xFF
    path.write_bytes(bytes(data))
    assert Dataset(out).verify() == ["valid/cat.npy"]
    assert run_cli("data", "info", out)[0] == 0  # headers and shapes are fine: only --verify reads the data
    rc, _, err = run_cli("data", "info", out, "--verify")
    assert rc == 2 and "valid/cat.npy" in err and "prepare it again" in err


def test_truncated_array_is_an_error(tmp_path: Path, toy_csv: Path) -> None:
    out = tmp_path / "ds"
    prepare(toy_schema(), out, toy_csv)
    np.save(out / "train" / "label.npy", np.zeros(3, np.float32))
    with pytest.raises(DataError, match="does not match the manifest"):
        Dataset(out).split("train")
    os.truncate(out / "valid" / "cat.npy", 100)  # a cut header; then a file gone
    with pytest.raises(DataError, match=r"valid/cat.npy: cannot be read .*prepare it again"):
        Dataset(out).split("valid")
    assert Dataset(out).verify() == ["train/label.npy", "valid/cat.npy"]
    (out / "test" / "num.npy").unlink()
    with pytest.raises(DataError, match=r"test/num.npy: cannot be read"):
        Dataset(out).split("test")


def test_prepare_twice_is_up_to_date(tmp_path: Path, run_cli, toy_csv: Path, toy_schema_file: Path) -> None:
    out = tmp_path / "ds"
    args = ("data", "prepare", "--schema", toy_schema_file, "--train", toy_csv, "--out", out)
    rc, _, err = run_cli(*args)
    assert rc == 0, err
    first = (out / "manifest.json").read_text()
    mtime = (out / "train" / "cat.npy").stat().st_mtime_ns
    rc, text, err = run_cli(*args)
    assert rc == 0 and "nothing to do" in " ".join(err.split()), err
    assert "rows/s" not in text and "nothing to do" in " ".join(text.split())
    assert (out / "manifest.json").read_text() == first
    assert (out / "train" / "cat.npy").stat().st_mtime_ns == mtime
    rc, out_text, _ = run_cli("data", "info", out, "--json")
    assert rc == 0 and json.loads(out_text)["checksum"] == json.loads(first)["checksum"]


def test_different_dataset_needs_force(tmp_path: Path, run_cli, toy_csv: Path, toy_schema_file: Path) -> None:
    out = tmp_path / "ds"
    assert run_cli("data", "prepare", "--schema", toy_schema_file, "--train", toy_csv, "--out", out)[0] == 0
    before = (out / "manifest.json").read_text()
    other = write_delimited(tmp_path / "other.csv", toy_rows(300, seed=8))
    args = ["data", "prepare", "--schema", toy_schema_file, "--train", other, "--out", out]
    rc, _, err = run_cli(*args)
    assert rc == 2 and str(out) in err and "--force" in err and "Traceback" not in err
    assert (out / "manifest.json").read_text() == before
    rc, _, err = run_cli(*args, "--force")
    assert rc == 0, err
    m = json.loads((out / "manifest.json").read_text())
    assert sum(s["rows"] for s in m["splits"].values()) == 300
    assert Dataset(out).verify() == [] and [p.name for p in leftovers(tmp_path, "ds")] == ["ds"]


def test_out_dir_not_a_dataset(tmp_path: Path, run_cli, toy_csv: Path, toy_schema_file: Path) -> None:
    out = tmp_path / "busy"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    rc, _, err = run_cli("data", "prepare", "--schema", toy_schema_file, "--train", toy_csv, "--out", out)
    assert rc == 2 and "not an mtkd dataset" in err
    assert (out / "notes.txt").read_text() == "mine"
    empty = tmp_path / "empty_dir"
    empty.mkdir()
    rc, _, err = run_cli("data", "prepare", "--schema", toy_schema_file, "--train", toy_csv, "--out", empty)
    assert rc == 0, err
    afile = tmp_path / "afile"
    afile.write_text("x")
    rc, _, err = run_cli("data", "prepare", "--schema", toy_schema_file, "--train", toy_csv, "--out", afile)
    assert rc == 2 and "not a directory" in err


# ---------------------------------------------------------------------------- bad inputs
def _rows_with(edit) -> list[list[str]]:
    rows = [list(r) for r in toy_rows(200, seed=5)]
    edit(rows)
    return rows


def _set(i: int, j: int, v: str):
    def edit(rows: list[list[str]]) -> None:
        rows[i][j] = v
    return edit


def _bad_inputs(tmp: Path) -> dict[str, tuple[list[str], list[str]]]:
    """name -> (extra CLI args, what the message must contain); files written into `tmp`."""
    schema = str(write_yaml(tmp / "schema.yaml", toy_schema_dict()))
    empty = tmp / "empty.csv"
    empty.write_bytes(b"")
    header_only = write_delimited(tmp / "header_only.csv", [])
    width = write_delimited(tmp / "width.csv", _rows_with(lambda r: r[40].pop()))  # line 42
    number = write_delimited(tmp / "number.csv", _rows_with(_set(150, 2, "seven")))  # line 152, column x
    label = write_delimited(tmp / "label.csv", _rows_with(_set(99, 0, "2")))  # line 101
    missing_label = write_delimited(tmp / "nolabel.csv", _rows_with(_set(9, 0, "")))  # line 11
    word_label = write_delimited(tmp / "wordlabel.csv", _rows_with(_set(19, 0, "yes")))  # line 21
    lacks = write_delimited(tmp / "lacks.csv", [r[:5] for r in toy_rows(20)], header=TOY_COLUMNS[:5])
    good = write_delimited(tmp / "good.csv", toy_rows(200, seed=6))
    headerless = write_delimited(tmp / "noheader.csv", [r[:5] for r in toy_rows(20)], header=None)
    libfm = tmp / "bad.libfm"
    libfm.write_text("-1 1:1 7:1\n1 2:1 8:1\n0 2:1 8:1\n3 1:1 7:1\n")  # line 4
    libfm_schema = str(write_yaml(tmp / "libfm.yaml", {
        "format": "libfm", "columns": ["u", "i"], "features": [{"names": ["u", "i"], "type": "categorical"}]}))
    unknown = str(write_yaml(tmp / "unknown.yaml", toy_schema_dict(min_count=3)))
    typo = toy_schema_dict()
    typo["features"][1]["transfrom"] = "log"
    typo_file = str(write_yaml(tmp / "typo.yaml", typo))
    wrong_type = toy_schema_dict()
    wrong_type["features"][3]["max_len"] = "ten"
    wrong_type_file = str(write_yaml(tmp / "wrongtype.yaml", wrong_type))
    headerless_schema = str(write_yaml(tmp / "noheader.yaml", toy_schema_dict(header=False, columns=TOY_COLUMNS)))
    S, T = ["--schema", schema], "--train"
    return {
        "missing_file": (S + [T, str(tmp / "nope.csv")], ["nope.csv", "not found"]),
        "missing_schema": (["--schema", str(tmp / "nope.yaml"), T, str(good)], ["nope.yaml", "not found"]),
        "empty_file": (S + [T, str(empty)], ["empty.csv", "empty"]),
        "header_only": (S + [T, str(header_only)], ["header_only.csv", "no data rows"]),
        "header_only_test": (S + [T, str(good), "--test", str(header_only)], ["header_only.csv", "no data rows"]),
        "wrong_width": (S + [T, str(width)], ["width.csv", "line 42", "expected 6 columns", "got 5"]),
        "not_a_number": (S + [T, str(number)], ["number.csv", "line 152", "'x'", "'seven'", "not a number"]),
        "not_a_number_in_valid": (S + [T, str(good), "--valid", str(number)], ["number.csv", "line 152", "'x'"]),
        "label_not_01": (S + [T, str(label)], ["label.csv", "line 101", "'label' (label): 2;", "0 or 1"]),
        "label_not_01_in_test": (S + [T, str(good), "--test", str(label)], ["label.csv", "line 101", "0 or 1"]),
        "label_missing": (S + [T, str(missing_label)], ["nolabel.csv", "line 11", "'label'", "empty"]),
        "label_word": (S + [T, str(word_label)], ["wordlabel.csv", "line 21", "'label'", "'yes'"]),
        "libfm_label": (["--schema", libfm_schema, T, str(libfm)], ["bad.libfm", "line 4", "-1/+1"]),
        "column_missing": (S + [T, str(lacks)], ["lacks.csv", "'tags'", "lacks"]),
        "headerless_width": (["--schema", headerless_schema, T, str(headerless)],
                             ["noheader.csv", "line 1", "has 5 columns", "lists 6"]),
        "unknown_key": (["--schema", unknown, T, str(good)], ["unknown.yaml", "min_count", "unknown key"]),
        "unknown_feature_key": (["--schema", typo_file, T, str(good)], ["typo.yaml", "features[1].transfrom"]),
        "wrong_type": (["--schema", wrong_type_file, T, str(good)], ["wrongtype.yaml", "features[3].max_len"]),
    }


CASES = [
    "missing_file", "missing_schema", "empty_file", "header_only", "header_only_test", "wrong_width",
    "not_a_number", "not_a_number_in_valid", "label_not_01", "label_not_01_in_test", "label_missing",
    "label_word", "libfm_label", "column_missing", "headerless_width", "unknown_key", "unknown_feature_key",
    "wrong_type",
]


@pytest.mark.parametrize("case", CASES)
def test_bad_input_via_cli(tmp_path: Path, run_cli, case: str) -> None:
    args, needles = _bad_inputs(tmp_path)[case]
    out = tmp_path / "out" / "ds"
    rc, stdout, err = run_cli("data", "prepare", *args, "--out", out)
    assert rc == 2, (rc, err)
    assert "Traceback" not in err and "Traceback" not in stdout
    assert err.count("error: ") == 1, err  # progress lines may come first; then one error message
    flat = " ".join(err[err.index("error: "):].split())
    for n in needles:
        assert n in flat, f"{n!r} not in {err!r}"
    assert not out.exists()
    assert not out.parent.exists() or leftovers(out.parent, "ds") == []


def test_bad_input_cases_all_listed(tmp_path: Path) -> None:
    assert sorted(_bad_inputs(tmp_path)) == sorted(CASES)


def test_pooled_file_error_names_the_second_file_and_its_line(tmp_path: Path, run_cli,
                                                              toy_schema_file: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(R, "CHUNK_ROWS", 50)
    a = write_delimited(tmp_path / "a.csv", toy_rows(300, seed=1))
    b = write_delimited(tmp_path / "b.csv", _rows_with(_set(120, 0, "5")))  # line 122 of b.csv
    rc, _, err = run_cli("data", "prepare", "--schema", toy_schema_file, "--train", a, "--train", b,
                         "--out", tmp_path / "ds")
    assert rc == 2 and "b.csv: line 122" in err, err
    assert leftovers(tmp_path, "ds") == []


@pytest.mark.parametrize(
    "args, needle",
    [
        (["data", "prepare", "--train", "x.csv"], "Missing option '--schema'"),
        (["data", "synth", "--rows", "many", "--out", "x.csv"], "'--rows'"),
        (["data", "nosuch"], "No such command"),
        (["data", "info", "nowhere"], "not a prepared dataset"),
    ],
)
def test_usage_errors_exit_2_without_traceback(run_cli, args: list[str], needle: str) -> None:
    rc, stdout, err = run_cli(*args)
    assert rc == 2 and needle in err, err
    assert "Traceback" not in err + stdout


def test_subprocess_has_no_traceback(tmp_path: Path, toy_schema_file: Path) -> None:
    exe = Path(sys.executable).with_name("mtkd")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "mtkd"]
    bad = write_delimited(tmp_path / "bad.csv", _rows_with(_set(30, 2, "n/a?")))
    proc = subprocess.run(cmd + ["data", "prepare", "--schema", str(toy_schema_file), "--train", str(bad),
                                 "--out", str(tmp_path / "ds")],
                          capture_output=True, text=True, timeout=120, env={**os.environ, "COLUMNS": "200"})
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout
    assert proc.stderr.count("error: ") == 1 and "bad.csv: line 32, column 'x'" in proc.stderr
    assert leftovers(tmp_path, "ds") == []


# ---------------------------------------------------------------------------- atomicity
def test_failed_prepare_keeps_old_dataset(tmp_path: Path, run_cli, toy_csv: Path, toy_schema_file: Path) -> None:
    out = tmp_path / "ds"
    assert run_cli("data", "prepare", "--schema", toy_schema_file, "--train", toy_csv, "--out", out)[0] == 0
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    bad = write_delimited(tmp_path / "bad.csv", _rows_with(_set(180, 0, "0.5")))
    rc, _, err = run_cli("data", "prepare", "--schema", toy_schema_file, "--train", toy_csv, "--test", bad,
                         "--force", "--out", out)
    assert rc == 2 and "bad.csv: line 182" in err
    after = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert after == before
    assert [p.name for p in leftovers(tmp_path, "ds")] == ["ds"]


@pytest.mark.parametrize("exc", [RuntimeError("boom"), KeyboardInterrupt()])
def test_interrupted_prepare_leaves_nothing(tmp_path: Path, toy_csv: Path, monkeypatch: pytest.MonkeyPatch,
                                            exc: BaseException) -> None:
    def fail(*args, **kwargs):
        raise exc

    monkeypatch.setattr(P, "_manifest", fail)
    with pytest.raises(type(exc)):
        prepare(toy_schema(), tmp_path / "ds", toy_csv)
    assert leftovers(tmp_path, "ds") == []


def test_stale_partial_directories_are_removed(tmp_path: Path, toy_csv: Path) -> None:
    stale = tmp_path / ".ds.partial-999999"
    (stale / "train").mkdir(parents=True)
    prepare(toy_schema(), tmp_path / "ds", toy_csv)
    assert [p.name for p in leftovers(tmp_path, "ds")] == ["ds"]


# ---------------------------------------------------------------------------- presets on the shared files
@pytest.mark.parametrize(
    "preset, files, rows",
    [
        ("criteo", ["criteo/criteo_dac_train_first10k.txt"], 10_000),
        ("avazu", ["avazu/avazu_train_first10k.csv"], 9_999),
        ("frappe", ["frappe/frappe.validation.libfm", "frappe/frappe.test.libfm"], 86_582),
    ],
)
def test_presets_prepare_shared_files(tmp_path: Path, run_cli, shared_data: Path, preset: str,
                                      files: list[str], rows: int) -> None:
    paths = [shared_data / f for f in files]
    if not all(p.exists() for p in paths):
        pytest.skip(f"missing {files}")
    out = tmp_path / preset
    args = ["data", "prepare", "--schema", PRESETS / f"{preset}.yaml", "--out", out]
    for p in paths:
        args += ["--train", p]
    rc, _, err = run_cli(*args)
    assert rc == 0, err
    ds = Dataset(out)
    splits = ds.manifest["splits"]
    assert sum(s["rows"] for s in splits.values()) == rows
    np.testing.assert_allclose([splits[s]["rows"] / rows for s in ("train", "valid", "test")],
                               [0.8, 0.1, 0.1], atol=0.02)
    for s in splits.values():
        assert 0.0 < s["label_rate"] < 1.0
    train = ds.split("train")
    assert train.arrays["cat"].min() >= 1
    assert set(np.unique(train.arrays["label"])) == {0.0, 1.0}
    assert ds.verify() == []


def test_infinite_numeric_value_is_refused_with_its_line(tmp_path, capsys):
    from mtkd.cli import main

    csv = tmp_path / "inf.csv"
    csv.write_text("label,x,c\n0,1.5,a\n1,inf,b\n0,2,a\n")
    schema = tmp_path / "s.yaml"
    schema.write_text("label: label\nfeatures:\n  - {name: x, type: numeric, transform: standardize}\n"
                      "  - {name: c, type: categorical}\nsplit: {ratios: [1.0]}\n")
    rc = main(["data", "prepare", "--schema", str(schema), "--train", str(csv), "--split", "0.4,0.3,0.3",
               "--out", str(tmp_path / "ds")])
    err = capsys.readouterr().err
    assert rc == 2 and "line 3" in err and "'x'" in err and "finite" in err
    assert not (tmp_path / "ds").exists()
    csv.write_text("label,x,c\n0,1.5,a\n1,1e400,b\n0,2,a\n")  # past float64: named as such, not as "inf"
    rc = main(["data", "prepare", "--schema", str(schema), "--train", str(csv), "--split", "0.4,0.3,0.3",
               "--out", str(tmp_path / "ds")])
    assert rc == 2 and "past float64's 1.8e308" in " ".join(capsys.readouterr().err.split())


def test_an_edit_of_the_same_size_between_the_sampled_blocks_prepares_again(tmp_path: Path) -> None:
    """Labels flipped in place (`sed -i`) keep the size and the sampled first/middle/last MiB; the
    modification time tells the prepare the file changed (it used to say "nothing to do")."""
    rows = [f"{i % 2},c{i % 7},{i}" for i in range(400_000)]  # ~5 MB: the middle of the file is unsampled
    raw = tmp_path / "big.csv"
    raw.write_text("y,c,x\n" + "\n".join(rows) + "\n")
    schema = schema_from_dict({"label": "y", "features": [{"name": "c", "type": "categorical"},
                                                         {"name": "x", "type": "numeric"}]})
    first = prepare(schema, tmp_path / "ds", raw)
    data = bytearray(raw.read_bytes())
    start = len(data) // 4
    line = data.index(b"\n", start) + 1
    data[line] = ord("1") if data[line] == ord("0") else ord("0")  # one label, same size, unsampled block
    before = raw.stat().st_mtime_ns
    raw.write_bytes(bytes(data))
    os.utime(raw, ns=(before + 10**9, before + 10**9))  # a clock that ticks coarsely still moves
    with pytest.raises(MtkdError, match="already holds a different dataset"):
        prepare(schema, tmp_path / "ds", raw)
    again = prepare(schema, tmp_path / "ds", raw, force=True)
    assert again["checksum"] != first["checksum"]
    logs: list[str] = []
    prepare(schema, tmp_path / "ds", raw, log=logs.append)
    assert any("nothing to do" in s for s in logs)  # unchanged since: up to date


def test_a_file_given_twice_is_warned_about(tmp_path: Path, toy_csv: Path) -> None:
    logs: list[str] = []
    prepare(toy_schema(), tmp_path / "ds", toy_csv, test=toy_csv, log=logs.append)
    assert any(f"warning: {toy_csv} is given twice (as train/valid and as test)" in s for s in logs), logs
    logs.clear()
    other = write_delimited(tmp_path / "other.csv", toy_rows(200, seed=3))
    prepare(toy_schema(), tmp_path / "ds2", toy_csv, test=other, log=logs.append)
    assert not any("given twice" in s for s in logs)


def test_values_past_float32_are_named_not_stored_as_inf(tmp_path: Path) -> None:
    """1e39 is finite in float64, the check's type, and inf in the float32 num.npy; 1e200 with
    standardize gave a std of NaN (encoder.json no longer JSON) and inf everywhere; fill_na: nan
    passed the schema and made the whole column NaN."""
    rows = [[str(i % 2), f"c{i % 3}", str(i)] for i in range(40)]
    rows[25][2] = "1e39"
    path = write_delimited(tmp_path / "big.csv", rows, header=["y", "c", "x"])

    def schema(**x):
        return schema_from_dict({"label": "y", "features": [{"name": "c", "type": "categorical"},
                                                            {"name": "x", "type": "numeric", **x}]})

    with pytest.raises(DataError, match=r"big.csv: line 27, column 'x': 1e\+39 is past float32's range"):
        prepare(schema(transform=["none"]), tmp_path / "a", path)
    rows[25][2] = "1e200"
    path = write_delimited(tmp_path / "big.csv", rows, header=["y", "c", "x"])
    with pytest.raises(DataError, match=r"big.csv: column 'x' .*too large for their mean and spread"):
        prepare(schema(transform=["standardize"]), tmp_path / "b", path)
    manifest = prepare(schema(transform=["log", "standardize"]), tmp_path / "c", path)  # the fix given works
    assert np.isfinite(Dataset(tmp_path / "c").split("train").arrays["num"]).all() and manifest["checksum"]
    with pytest.raises(Exception, match="need a finite number"):
        schema(fill_na="nan")
    assert not leftovers(tmp_path, "a") and not leftovers(tmp_path, "b")


def test_one_class_written_two_ways_is_refused(tmp_path: Path) -> None:
    """`1`, `1.0` and ` 1` became three classes of a multi-class label without a word (a binary
    label reads all three as 1)."""
    rows = [[y, f"c{i % 3}"] for i, y in enumerate(["1", "2", "3", "1.0", "2", "3"] * 5)]
    path = write_delimited(tmp_path / "mc.csv", rows, header=["y", "c"])
    schema = schema_from_dict({"task": "multiclass", "label": "y", "features": [{"name": "c", "type": "categorical"}]})
    with pytest.raises(DataError, match=r"mc.csv: column 'y' \(label\): classes '1.0' and '1' are one class"):
        prepare(schema, tmp_path / "ds", path)
    rows = [[y.replace(".0", ""), c] for y, c in rows]
    assert prepare(schema, tmp_path / "ds", write_delimited(tmp_path / "mc.csv", rows, header=["y", "c"]))


def test_a_dataset_cut_off_between_the_swap_s_renames_comes_back(tmp_path: Path, monkeypatch) -> None:
    """Replacing a dataset renames the old one aside, then the new one in: Ctrl-C between the two
    left no dataset (the new one cleaned up, the old one stranded in .NAME.old-PID, never swept)."""
    from mtkd.data import atomic

    path = write_delimited(tmp_path / "a.csv", toy_rows(300, seed=1))
    first = prepare(toy_schema(), tmp_path / "ds", path)
    real = os.replace

    def interrupted(src, dst):
        if Path(src).name.startswith(".ds.partial-"):
            raise KeyboardInterrupt
        real(src, dst)

    monkeypatch.setattr(atomic.os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        prepare(toy_schema(), tmp_path / "ds", path, force=True)
    monkeypatch.undo()
    assert Dataset(tmp_path / "ds").checksum == first["checksum"] and leftovers(tmp_path, "ds") == [tmp_path / "ds"]
    real(tmp_path / "ds", tmp_path / ".ds.old-999999999")  # killed (SIGKILL) between the renames
    said: list[str] = []
    assert prepare(toy_schema(), tmp_path / "ds", path, log=said.append)["checksum"] == first["checksum"]
    assert any("nothing to do" in x for x in said), said  # put back, not prepared again
    assert leftovers(tmp_path, "ds") == [tmp_path / "ds"]
