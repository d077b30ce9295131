"""Readers: CSV (with and without header), TSV, Parquet and libFM on small files the tests write."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

import mtkd.data.readers as R
from conftest import TOY_COLUMNS, toy_rows, toy_schema, toy_schema_dict, write_delimited
from mtkd.data.encoder import EncoderFitter
from mtkd.data.lines import nonempty_lines
from mtkd.data.readers import open_reader
from mtkd.data.schema import schema_from_dict
from mtkd.errors import DataError

ROWS = toy_rows(300, seed=7)


def read_all(path: Path, schema) -> pa.Table:
    return pa.Table.from_batches(list(open_reader(path, schema).batches()))


def expected_table() -> dict[str, list]:
    cols = list(zip(*ROWS))
    return {
        "label": [float(v) for v in cols[0]],
        "rid": [float(v) for v in cols[1]],
        "x": [float(v) if v else None for v in cols[2]],
        "c1": list(cols[3]),
        "c2": list(cols[4]),
        "tags": [v if v else None for v in cols[5]],
    }


def check_toy(table: pa.Table) -> None:
    assert table.column_names == TOY_COLUMNS
    assert table.schema.field("label").type == pa.float64()
    assert table.schema.field("x").type == pa.float64()
    assert table.schema.field("c1").type == pa.string()
    assert table.to_pydict() == expected_table()


def test_csv_with_header(tmp_path: Path) -> None:
    path = write_delimited(tmp_path / "a.csv", ROWS)
    check_toy(read_all(path, toy_schema()))
    assert open_reader(path, toy_schema()).count_rows() == 300


def test_csv_header_columns_in_another_order_and_extra_columns(tmp_path: Path) -> None:
    header = ["extra", *reversed(TOY_COLUMNS)]
    rows = [["zz", *reversed(r)] for r in ROWS]
    path = write_delimited(tmp_path / "a.csv", rows, header=header)
    check_toy(read_all(path, toy_schema()))


def test_csv_without_header_uses_columns(tmp_path: Path) -> None:
    path = write_delimited(tmp_path / "a.csv", ROWS, header=None)
    schema = toy_schema(header=False, columns=TOY_COLUMNS)
    check_toy(read_all(path, schema))
    reader = open_reader(path, schema)
    assert reader.count_rows() == 300 and reader.line_of(0) == 1


def test_tsv_with_and_without_header(tmp_path: Path) -> None:
    path = write_delimited(tmp_path / "a.tsv", ROWS, delimiter="\t")
    check_toy(read_all(path, toy_schema(format="tsv")))
    path = write_delimited(tmp_path / "b.tsv", ROWS, header=None, delimiter="\t")
    check_toy(read_all(path, toy_schema(format="tsv", header=False, columns=TOY_COLUMNS)))


def test_custom_delimiter_and_crlf(tmp_path: Path) -> None:
    path = write_delimited(tmp_path / "a.txt", ROWS, delimiter=";", newline="\r\n")
    check_toy(read_all(path, toy_schema(delimiter=";")))


def test_parquet(tmp_path: Path) -> None:
    exp = expected_table()
    table = pa.table({
        "label": pa.array([int(v) for v in exp["label"]], pa.int64()),  # ints are cast to the label's float
        "rid": pa.array([int(v) for v in exp["rid"]], pa.int32()),
        "x": pa.array(exp["x"], pa.float32()),
        "c1": pa.array(exp["c1"]),
        "c2": pa.array(exp["c2"]),
        "tags": pa.array(exp["tags"]),
        "unused": pa.array(np.arange(300)),
    })
    path = tmp_path / "a.parquet"
    pq.write_table(table, path, row_group_size=64)
    got = read_all(path, toy_schema(format="parquet"))
    x = exp.pop("x")
    np.testing.assert_allclose(np.array(got.column("x").to_pylist(), dtype=float),
                               np.array(x, dtype=float), rtol=1e-6)
    assert got.drop(["x"]).to_pydict() == exp
    assert open_reader(path, toy_schema(format="parquet")).count_rows() == 300


def test_parquet_integer_categoricals_become_strings(tmp_path: Path) -> None:
    path = tmp_path / "ints.parquet"
    pq.write_table(pa.table({"y": [0, 1, 1], "c": [5, 7, 5]}), path)
    schema = schema_from_dict({"format": "parquet", "label": "y", "features": [{"name": "c", "type": "categorical"}]})
    got = read_all(path, schema)
    assert got.column("c").to_pylist() == ["5", "7", "5"]
    assert got.column("y").to_pylist() == [0.0, 1.0, 1.0]
    # pandas' int ids with a missing one are floats with NaN: missing like null, not an id "nan"
    pq.write_table(pa.table({"y": [0, 1, 1, 0], "c": [5.0, float("nan"), None, 7.0]}), path)
    assert read_all(path, schema).column("c").to_pylist() == ["5", None, None, "7"]


LIBFM_SCHEMA = {
    "format": "libfm",
    "columns": ["user", "item", "price"],
    "label": "label",
    "features": [{"names": ["user", "item"], "type": "categorical"}, {"name": "price", "type": "numeric"}],
}


@pytest.mark.parametrize("newline", ["\n", "\r\n"])
def test_libfm(tmp_path: Path, newline: str) -> None:
    lines = ["-1 3:1 17:1 40:2.5", "1 4:1 17:1 40:0.5", "+1 3:1 18:1 40:-1", "-1 5:1 19:1 40:1e2"]
    path = tmp_path / "a.libfm"
    path.write_bytes((newline.join(lines) + newline).encode())
    got = read_all(path, schema_from_dict(LIBFM_SCHEMA)).to_pydict()
    assert got == {
        "label": [0.0, 1.0, 1.0, 0.0],
        "user": ["3", "4", "3", "5"],
        "item": ["17", "17", "18", "19"],
        "price": [2.5, 0.5, -1.0, 100.0],
    }
    assert open_reader(path, schema_from_dict(LIBFM_SCHEMA)).count_rows() == 4


def test_libfm_accepts_0_1_labels_and_no_final_newline(tmp_path: Path) -> None:
    path = tmp_path / "a.libfm"
    path.write_text("0 3:1 17:1 40:1\n1 4:1 17:1 40:1")
    got = read_all(path, schema_from_dict(LIBFM_SCHEMA))
    assert got.column("label").to_pylist() == [0.0, 1.0]


def test_libfm_index_with_value_0_is_absent(tmp_path: Path) -> None:
    """`3:0` is x_3 = 0, a one-hot entry switched off: a missing value, not the id 3 (as `3:1` is)."""
    path = tmp_path / "a.libfm"
    path.write_text("1 3:0 17:1 40:0\n0 3:1 17:0.0 40:0\n")
    got = read_all(path, schema_from_dict(LIBFM_SCHEMA)).to_pydict()
    assert got["user"] == [None, "3"] and got["item"] == ["17", None] and got["price"] == [0.0, 0.0]


def test_sequence_feature_read_and_encoded(tmp_path: Path) -> None:
    """Separator, max_len truncation and padding with 0."""
    rows = [["1", "0", "1", "a", "k", "t1;t2"], ["0", "1", "1", "a", "k", "t3;t2;t1;t2;t1"],
            ["1", "2", "1", "a", "k", ""], ["0", "3", "1", "a", "k", "t2"], ["0", "4", "1", "a", "k", ";t3;;t1;"],
            ["0", "5", "1", "a", "k", ";;"], ["0", "6", "1", "a", "k", "new;t2;t2;t2"]]
    path = write_delimited(tmp_path / "seq.csv", rows)
    d = toy_schema_dict()
    d["features"][3] = {"name": "tags", "type": "sequence", "separator": ";", "max_len": 3}
    schema = schema_from_dict(d)
    batch = next(open_reader(path, schema).batches())
    assert batch.column("tags").to_pylist()[:4] == ["t1;t2", "t3;t2;t1;t2;t1", None, "t2"]
    fitter = EncoderFitter(schema)
    fitter.add(batch.slice(0, 5), np.arange(5))  # fit on the first five rows
    enc = fitter.finish()
    # counts: t2 x4, t1 x4, t3 x2 -> ids 2, 3, 4 (ties by value); empty tokens are not values
    assert enc.state["features"]["tags"]["vocab"] == ["t1", "t2", "t3"]
    seq = enc.transform(batch)["seq_tags"]
    assert seq.dtype == np.int32
    # truncated to max_len 3; empty tokens dropped, not left as holes; unseen "new" -> OOV 1
    np.testing.assert_array_equal(seq, [[2, 3, 0], [4, 3, 2], [0, 0, 0], [3, 0, 0], [4, 2, 0], [0, 0, 0],
                                        [1, 3, 3]])


def test_many_small_blocks_equal_one_block(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_delimited(tmp_path / "a.csv", ROWS)
    whole = read_all(path, toy_schema())
    monkeypatch.setattr(R, "CHUNK_ROWS", 16)
    batches = list(open_reader(path, toy_schema(), block_size=1024).batches())
    assert len(batches) > 3
    assert pa.Table.from_batches(batches).equals(whole)


# ---------------------------------------------------------------------------- errors
def _data_error(path: Path, schema, *needles: str) -> str:
    with pytest.raises(DataError) as exc:
        reader = open_reader(path, schema)
        list(reader.batches())
    msg = str(exc.value)
    assert str(path) in msg, msg
    for n in needles:
        assert n in msg, msg
    return msg


def test_reader_errors(tmp_path: Path) -> None:
    schema = toy_schema()
    _data_error(tmp_path / "missing.csv", schema, "not found")
    _data_error(tmp_path, schema, "directory")
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    _data_error(empty, schema, "empty")
    header_only = write_delimited(tmp_path / "header.csv", [])
    _data_error(header_only, schema, "no data rows")
    lacks = write_delimited(tmp_path / "lacks.csv", [r[:-1] for r in ROWS], header=TOY_COLUMNS[:-1])
    _data_error(lacks, schema, "'tags'", "lacks", "Fix the column names")
    tabs = write_delimited(tmp_path / "tabs.csv", ROWS, delimiter="\t")  # a TSV given to a CSV schema
    _data_error(tabs, schema, "looks separated by '\\t', the schema reads ','", 'set `delimiter: "\\t"`')


def test_reader_error_lines_in_late_blocks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(R, "CHUNK_ROWS", 16)
    rows = [list(r) for r in ROWS]
    rows[250][2] = "12abc"  # file line 252 (header is line 1)
    path = write_delimited(tmp_path / "num.csv", rows)
    msg = _data_error(path, toy_schema(), "line 252", "'x'", "'12abc'")
    assert "not a number" in msg
    rows = [list(r) for r in ROWS]
    rows[200].append("surplus")  # line 202
    path = write_delimited(tmp_path / "width.csv", rows)
    _data_error(path, toy_schema(), "line 202", "expected 6 columns", "got 7")


def test_headerless_wrong_column_count(tmp_path: Path) -> None:
    path = write_delimited(tmp_path / "a.csv", ROWS[:5], header=None)
    _data_error(path, toy_schema(header=False, columns=TOY_COLUMNS[:-1] + ["tags", "more"]),
                "line 1", "has 6 columns", "lists 7")


def test_libfm_errors(tmp_path: Path) -> None:
    schema = schema_from_dict(LIBFM_SCHEMA)
    path = tmp_path / "a.libfm"
    path.write_text("1 3:1 17:1 40:1\n-1 3:1 17:1 40:1\n2 3:1 17:1 40:1\n")
    _data_error(path, schema, "line 3", "label", "-1/+1")
    path.write_text("1 3:1 17:1 40:1\nyes 3:1 17:1 40:1\n")
    _data_error(path, schema, "line 2", "not a number")
    path.write_text("1 3:1 17:1 40:1\n-1 3:1 17:1 40:1\n-1 3:1 17:1\n")
    _data_error(path, schema, "line 3", "got 2 tokens")
    path.write_text("1 3:1 17:1 40:1\n1 3:1 17:1 40:x\n")
    _data_error(path, schema, "line 2", "'price'", "'40:x'", "numeric value")
    path.write_text("1 3:1 17:1 40:1\n\n1 3:1 17:1 40:1\n1 3:1 17:1 40\n")  # no value; line 4 after a blank line
    _data_error(path, schema, "line 4", "'price'", "'40'")
    for bad in ("4:1:2", ":1", '"4:1', "4:x"):  # a categorical token is checked too
        path.write_text(f"1 3:1 17:1 40:1\n1 {bad} 17:1 40:1\n")
        _data_error(path, schema, "line 2", "'user'", repr(bad), "idx:value")


def test_libfm_whitespace_variants(tmp_path: Path) -> None:
    """Trailing spaces, tabs and repeated spaces (as libSVM writers leave them) read like single spaces."""
    path = tmp_path / "a.libfm"
    path.write_bytes(b"-1 3:1 17:1 40:2.5 \r\n1\t4:1  17:1\t40:0.5\t\n\n +1 3:1 18:1 40:-1\n")
    got = read_all(path, schema_from_dict(LIBFM_SCHEMA)).to_pydict()
    assert got == {"label": [0.0, 1.0, 1.0], "user": ["3", "4", "3"], "item": ["17", "17", "18"],
                   "price": [2.5, 0.5, -1.0]}
    assert open_reader(path, schema_from_dict(LIBFM_SCHEMA)).count_rows() == 3


def test_line_numbers_count_blank_lines(tmp_path: Path) -> None:
    """The parser skips blank lines; messages must still give the line in the file."""
    text = "label,rid,x,c1,c2,tags\n1,0,1,a,b,\n\n0,1,2,a,b,\r\n\r\n1,2,zz,a,b,\n"
    path = tmp_path / "blank.csv"
    path.write_text(text)
    _data_error(path, toy_schema(), "line 6", "'x'", "'zz'")
    reader = open_reader(path, toy_schema())
    assert reader.count_rows() == 3 and [reader.line_of(i) for i in range(3)] == [2, 4, 6]
    lines = [i + 1 for i, line in enumerate(text.split("\n")[:-1]) if line.strip()]
    got = np.concatenate(list(nonempty_lines(path, block_size=3)))  # blocks split lines and CRLFs
    np.testing.assert_array_equal(got, lines)


def test_header_only_without_line_end(tmp_path: Path) -> None:
    path = tmp_path / "h.csv"
    path.write_text(",".join(TOY_COLUMNS))
    _data_error(path, toy_schema(), "no data rows")


def test_bad_number_after_unused_columns(tmp_path: Path) -> None:
    """The column Arrow reports is the file's column, also when columns before it are not read."""
    rows = [["u1", "u2", *r] for r in ROWS]
    rows[10][4] = "1.2.3"  # column x, line 12
    path = write_delimited(tmp_path / "a.csv", rows, header=["unused1", "unused2", *TOY_COLUMNS])
    _data_error(path, toy_schema(), "line 12", "column 'x'", "'1.2.3'")
    rows = [list(r) for r in ROWS]
    rows[3][0] = "yes"
    path = write_delimited(tmp_path / "b.csv", rows)
    msg = _data_error(path, toy_schema(), "line 5", "column 'label'", "'yes'", "0 or 1")
    assert "categorical" not in msg
    rows[3][0] = " "  # shown as the file has it: Arrow's message trims it to ''
    path = write_delimited(tmp_path / "c.csv", rows)
    _data_error(path, toy_schema(), "line 5", "column 'label': ' ' is not a number")
    rows = [list(r) for r in ROWS]
    rows[1][2], rows[6][2] = "-nan", "abc"  # a NaN spelling is a missing value, not the bad one
    path = write_delimited(tmp_path / "d.csv", rows)
    _data_error(path, toy_schema(), "line 8", "'abc' is not a number")


def test_parquet_errors(tmp_path: Path) -> None:
    schema = schema_from_dict({"format": "parquet", "label": "y",
                               "features": [{"name": "c", "type": "categorical"}, {"name": "x", "type": "numeric"}]})
    bad = tmp_path / "bad.parquet"
    bad.write_text("label,c,x\n1,a,2\n")
    _data_error(bad, schema, "not a readable Parquet file")
    empty = tmp_path / "empty.parquet"
    pq.write_table(pa.table({"y": pa.array([], pa.int64()), "c": pa.array([], pa.string()),
                             "x": pa.array([], pa.float64())}), empty)
    _data_error(empty, schema, "no rows")
    text = tmp_path / "text.parquet"
    x = ["1.5"] * 30 + [None, "q", "2"]
    pq.write_table(pa.table({"y": [0] * 33, "c": ["a"] * 33, "x": x}), text, row_group_size=10)
    _data_error(text, schema, "row 31 (counting from 0", "column 'x'", "'q'")
    lacks = tmp_path / "lacks.parquet"
    pq.write_table(pa.table({"y": [0], "c": ["a"]}), lacks)
    _data_error(lacks, schema, "['x']", "lacks")


def test_parquet_rows_are_named_as_rows_counted_from_0(tmp_path: Path) -> None:
    """Prepare's label and infinity checks said "line 6" of a Parquet file (which has no lines)
    for the row pandas calls 5; they now name the row as the numeric-cast error does."""
    from mtkd.data.prepare import prepare

    schema = schema_from_dict({"format": "parquet", "label": "y",
                               "features": [{"name": "c", "type": "categorical"}, {"name": "x", "type": "numeric"}]})
    for y, x, needles in (([0, 1, 0, 1, 0, 2, 1], [1.0] * 7, ("column 'y' (label): 2", "labels must be 0 or 1")),
                          ([0, 1] * 3 + [0], [1.0] * 5 + [float("inf"), 1.0], ("column 'x'", "infinite"))):
        path = tmp_path / "t.parquet"
        pq.write_table(pa.table({"y": y, "c": list("abcdefg"), "x": x}), path)
        with pytest.raises(DataError) as exc:
            prepare(schema, tmp_path / "ds", path)
        msg = str(exc.value)
        assert "row 5 (counting from 0" in msg and "line" not in msg, msg
        assert all(n in msg for n in needles), msg


def test_header_names_with_spaces_after_the_commas(tmp_path: Path) -> None:
    """`label, rid, x, ...`: the names are read stripped, and so are the columns Arrow reads."""
    plain = write_delimited(tmp_path / "plain.csv", ROWS)
    lines = plain.read_text().splitlines()
    spaced = tmp_path / "spaced.csv"
    spaced.write_text("\n".join([", ".join(lines[0].split(",")), *lines[1:]]) + "\n")
    assert read_all(spaced, toy_schema()).to_pydict() == read_all(plain, toy_schema()).to_pydict()


def test_line_numbers_follow_records_that_span_lines(tmp_path: Path) -> None:
    """A quoted field may hold newlines: the line named is the bad record's own first line, and
    an ordered split counts records, not lines."""
    rows = [list(r) for r in ROWS[:5]]
    rows[0][3] = "a\nb\nc"  # record 1 spans file lines 2-4
    rows[3][2] = "12abc"  # record 4 starts on line 7
    path = write_delimited(tmp_path / "ml.csv", rows)
    _data_error(path, toy_schema(), "line 7", "'x'", "'12abc'")
    rows[3][2] = "1"
    rows[4] = rows[4][:-1]  # too few fields on line 8
    path = write_delimited(tmp_path / "ml.csv", rows)
    _data_error(path, toy_schema(), "line 8")
    rows[4] = list(ROWS[4])
    path = write_delimited(tmp_path / "ml.csv", rows)
    assert open_reader(path, toy_schema()).count_rows() == 5


def test_records_that_span_lines_read_past_the_first_parse_block(tmp_path: Path) -> None:
    """Arrow's chunker cut blocks at any newline: a file with a quoted newline failed ("CSV
    parser got out of sync with chunker") as soon as it was longer than one block."""
    rows = [list(r) for r in ROWS] * 20
    for r in rows[::3]:
        r[3] = "t1\nt2"
    path = write_delimited(tmp_path / "ml.csv", rows)
    reader = open_reader(path, toy_schema(), block_size=4096)
    assert path.stat().st_size > 10 * 4096 and sum(b.num_rows for b in reader.batches()) == len(rows)
    assert reader.count_rows() == len(rows)


def test_compressed_and_non_utf8_files_are_named(tmp_path: Path) -> None:
    import gzip

    plain = write_delimited(tmp_path / "a.csv", ROWS)
    packed = tmp_path / "a.csv.gz"
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    _data_error(packed, toy_schema(), "gzip-compressed", f"gzip -dk {packed}")
    for name in ("a.csv.gz", "b.csv"):  # the command given works, with or without the .gz suffix
        gz = tmp_path / "run" / name
        gz.parent.mkdir(exist_ok=True)
        gz.write_bytes(gzip.compress(plain.read_bytes()))
        msg = _data_error(gz, toy_schema(), "gzip-compressed")
        command = msg.split("`")[1]
        subprocess.run(command, shell=True, check=True, cwd=tmp_path)
        made = tmp_path / "run" / ("a.csv" if name.endswith(".gz") else "b.plain.csv")
        assert made.read_bytes() == plain.read_bytes() and gz.exists(), command
    text = plain.read_bytes().split(b"\n")
    fields = text[3].split(b",")
    fields[3] += b"\xe9"  # a Latin-1 byte in line 4, column c1 (text)
    text[3] = b",".join(fields)
    latin = tmp_path / "latin.csv"
    latin.write_bytes(b"\n".join(text))
    _data_error(latin, toy_schema(), "line 4", "column 'c1'", "not UTF-8", "iconv")
    # an earlier bad byte in a column the schema does not read is not the one named
    text = [line + (b",caf\xe9" if i == 2 else b",x" if i else b",unused") for i, line in enumerate(text) if line]
    latin.write_bytes(b"\n".join(text) + b"\n")
    _data_error(latin, toy_schema(), "line 4", "column 'c1'", "not UTF-8")
    text[0] = text[0].replace(b"c1", b"c\xe91")  # the header: named as not UTF-8, not as a column the file lacks
    latin.write_bytes(b"\n".join(text) + b"\n")
    msg = _data_error(latin, toy_schema(), "line 1 (the header) has bytes that are not UTF-8", "iconv")
    assert "lacks" not in msg


def test_every_spelling_of_nan_is_a_missing_value(tmp_path: Path) -> None:
    """`-nan` (C's printf), `NAN`, `+nan` and Parquet's NaN reach the encoder as missing, not as a
    float NaN that makes a standardised column's mean NaN in every split."""
    from mtkd.data.prepare import prepare

    schema = {"label": "y", "features": [{"name": "c", "type": "categorical"},
                                         {"name": "x", "type": "numeric", "transform": "standardize"}]}
    spellings = ["-nan", "NAN", "Nan", "+nan", "nan", "1.5", "2.5", "3.5"]
    path = tmp_path / "nan.csv"
    path.write_text("y,c,x\n" + "".join(f"{i % 2},a,{v}\n" for i, v in enumerate(spellings * 20)))
    parquet = tmp_path / "nan.parquet"
    x = np.tile([np.nan, 1.5, 2.5, 3.5], 40)
    pq.write_table(pa.table({"y": np.arange(160) % 2, "c": ["a"] * 160, "x": x}), parquet)
    for raw, extra in ((path, {}), (parquet, {"format": "parquet"})):
        sch = schema_from_dict({**schema, **extra})
        (batch,) = list(open_reader(raw, sch).batches())
        col = batch.column("x")
        assert col.null_count == (100 if raw == path else 40) and not pc.any(pc.is_nan(pc.drop_null(col))).as_py()
        out = tmp_path / f"ds_{raw.suffix[1:]}"
        prepare(sch, out, raw)
        enc = json.loads((out / "encoder.json").read_text())["features"]["x"]
        assert np.isfinite(enc["mean"]) and np.isfinite(enc["std"])  # fill_na 0 stands in for the missing
        for split in ("train", "valid", "test"):
            assert np.isfinite(np.load(out / split / "num.npy")).all()


def test_a_file_to_score_needs_only_the_models_inputs(tmp_path: Path) -> None:
    """Traffic to score has no label, no group (an evaluation key) and no legacy score column (the
    model the student replaces); a header-less file may leave out the label column. The scores
    are those of the full file."""
    from mtkd.config import load_train_config
    from mtkd.data.prepare import prepare
    from mtkd.serve.predict import predict_file
    from mtkd.train.run import train_run

    rng = np.random.default_rng(0)
    n = 600
    c, x = rng.choice(list("abcd"), n), rng.random(n)
    y = (rng.random(n) < np.where(c == "a", 0.7, 0.2)).astype(int)
    lines = [f"{y[i]},u{i % 20},{rng.random():.3f},{c[i]},{x[i]:.3f}" for i in range(n)]
    full = tmp_path / "full.csv"
    full.write_text("y,uid,legacy,c,x\n" + "\n".join(lines) + "\n")
    schema = {"label": "y", "group": "uid", "scores": ["legacy"],
              "features": [{"name": "c", "type": "categorical"}, {"name": "x", "type": "numeric"}]}
    prepare(schema_from_dict(schema), tmp_path / "ds", full)
    cfg = load_train_config(None, ["epochs=1", "batch_size=128", "device=cpu"], model="lr")
    train_run(cfg, tmp_path / "ds", tmp_path / "run", log=lambda s: None, progress=False)
    traffic = tmp_path / "traffic.csv"
    traffic.write_text("c,x\n" + "\n".join(line.split(",", 3)[3] for line in lines) + "\n")
    predict_file(tmp_path / "run", full, tmp_path / "a.csv")
    predict_file(tmp_path / "run", traffic, tmp_path / "b.csv")
    assert (tmp_path / "a.csv").read_text() == (tmp_path / "b.csv").read_text()

    headerless = schema_from_dict({**schema_from_dict(schema).model_dump(exclude_defaults=True),
                                   "header": False, "columns": ["y", "uid", "legacy", "c", "x"]})
    no_label = tmp_path / "no_label.csv"
    no_label.write_text("\n".join(line.split(",", 1)[1] for line in lines[:5]) + "\n")
    (batch,) = list(open_reader(no_label, headerless, need_label=False).batches())
    assert batch.schema.names == ["c", "x"] and batch.num_rows == 5
    with pytest.raises(DataError, match="all but the label 'y'"):
        bad = tmp_path / "three.csv"
        bad.write_text("a,b,c\n")
        open_reader(bad, headerless, need_label=False)


def test_files_that_are_not_plain_csv_are_named_with_their_fix(tmp_path: Path) -> None:
    """Old-Mac CR line ends, a Parquet file or a zip (xlsx) given to a CSV schema, UTF-16 text and
    a header naming a read column twice: each is one error naming the file and the fix (they were
    a _csv.Error traceback, a header of binary garbage, or silently the first copy)."""
    import zipfile

    plain = write_delimited(tmp_path / "a.csv", ROWS)
    cr = tmp_path / "cr.csv"
    cr.write_bytes(plain.read_bytes().replace(b"\n", b"\r"))
    _data_error(cr, toy_schema(), "old-Mac line ends", "tr '\\r' '\\n'")
    parquet = tmp_path / "a.parquet"
    pq.write_table(pa.table({"x": [1, 2]}), parquet)
    _data_error(parquet, toy_schema(), "is a Parquet file: set `format: parquet`")
    with zipfile.ZipFile(tmp_path / "book.xlsx", "w") as z:
        z.writestr("sheet.xml", "<x/>")
    _data_error(tmp_path / "book.xlsx", toy_schema(), "is a zip archive (an .xlsx workbook is one)")
    utf16 = tmp_path / "u16.csv"
    utf16.write_bytes(plain.read_text().encode("utf-16"))
    _data_error(utf16, toy_schema(), "is not a text file", "iconv -f UTF-16")
    lines = plain.read_text().splitlines()
    dup = tmp_path / "dup.csv"
    dup.write_text("\n".join([lines[0] + ",x"] + [line + ",999" for line in lines[1:]]) + "\n")
    _data_error(dup, toy_schema(), "line 1 names column(s) ['x'] more than once")


def test_a_header_longer_than_a_mebibyte_is_read_whole(tmp_path: Path) -> None:
    wide = [f"a_long_unused_column_name_{i}" for i in range(60_000)]  # ~1.8 MB of header
    plain = write_delimited(tmp_path / "a.csv", ROWS).read_text().splitlines()
    path = tmp_path / "wide.csv"
    path.write_text("\n".join([",".join(wide) + "," + plain[0]] +
                              [",".join(["0"] * len(wide)) + "," + line for line in plain[1:]]) + "\n")
    reader = open_reader(path, toy_schema())
    assert len(reader.file_columns) == len(wide) + len(plain[0].split(","))
    assert sum(b.num_rows for b in reader.batches()) == len(plain) - 1


def test_a_header_of_numbers_is_named_as_a_missing_header(tmp_path: Path) -> None:
    plain = write_delimited(tmp_path / "a.csv", ROWS).read_text().splitlines()
    bare = tmp_path / "bare.csv"
    bare.write_text("\n".join(plain[1:]) + "\n")
    _data_error(bare, toy_schema(), "Line 1 looks like a data row", "set `header: false`")
    with pytest.raises(DataError, match="give the file the training files' header line"):
        open_reader(bare, toy_schema(), need_label=False)


def test_a_column_that_differs_only_invisibly_is_named_escaped(tmp_path: Path) -> None:
    """'café' typed as one character in the schema and as e + a combining accent in the file
    printed identically in "the schema names ['café'] that the file lacks; the file has café"."""
    schema = schema_from_dict({"label": "y", "features": [{"name": "caf\u00e9", "type": "categorical"}]})
    path = write_delimited(tmp_path / "u.csv", [["1", "a"], ["0", "b"]], header=["y", "cafe\u0301"])
    _data_error(path, schema, "The file's 'cafe\\u0301' is the schema's 'caf\\xe9' but for Unicode normalisation")
    path = write_delimited(tmp_path / "c.csv", [["1", "a"], ["0", "b"]], header=["y", "Caf\u00e9"])
    _data_error(path, schema, "The file's 'Caf\\xe9' is the schema's 'caf\\xe9' but for case")


def test_a_libfm_file_to_score_may_leave_out_its_label(tmp_path: Path) -> None:
    """`mtkd predict` reads a file "with or without the label": a libFM line of field tokens only
    (or with a `?` label) was refused as "expected a label and 3 tokens, got 2"."""
    schema = schema_from_dict(LIBFM_SCHEMA)
    path = tmp_path / "score.libfm"
    path.write_text("1 3:1 17:1 40:2.5\n3:1 18:1 40:0.5\n? 4:1 17:0 40:1\n")
    (batch,) = list(open_reader(path, schema, need_label=False).batches())
    assert batch.column("user").to_pylist() == ["3", "3", "4"]
    assert batch.column("item").to_pylist() == ["17", "18", None]
    assert batch.column("price").to_pylist() == [2.5, 0.5, 1.0]
    assert "label" not in batch.schema.names
    path.write_text("1 3:1 17:1 40:2.5\n3:1 18:1\n")
    with pytest.raises(DataError, match=r"line 2: expected 3 idx:value tokens \(one per field in `columns:`\), "
                                        "after a label or without one, got 2"):
        list(open_reader(path, schema, need_label=False).batches())
    _data_error(path, schema, "line 2: expected a label and 3 idx:value tokens")  # training still needs it
    path.write_text("1 3:1 17:1 40:2.5\n3:1 17:x 40:1\n")  # tokens counted from the line's first one
    with pytest.raises(DataError, match=r"line 2, field 'item' \(token 2\): '17:x'"):
        list(open_reader(path, schema, need_label=False).batches())


def test_a_multiclass_libfm_file_reads_its_labels_as_classes(tmp_path: Path) -> None:
    """libSVM's multi-class labels (1..K): they were forced to binary 0/1 floats, and the
    encoder's class vocabulary died on them with an ArrowTypeError."""
    schema = schema_from_dict({**LIBFM_SCHEMA, "task": "multiclass"})
    path = tmp_path / "mc.libfm"
    path.write_text("1 3:1 17:1 40:2.5\n2 3:1 18:1 40:0.5\n3 4:1 17:1 40:1\n-1 5:1 19:1 40:1.5\n")
    (batch,) = list(open_reader(path, schema).batches())
    assert batch.column("label").to_pylist() == ["1", "2", "3", "-1"]
    from mtkd.data.prepare import prepare

    path.write_text(path.read_text() * 10)
    manifest = prepare(schema, tmp_path / "ds", path, ratios=[0.8, 0.1, 0.1])
    assert set(manifest["splits"]["train"]["class_counts"]) == {"-1", "1", "2", "3"}
