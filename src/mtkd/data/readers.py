"""Raw file readers: CSV, TSV, Parquet (here) and libFM (`libfm.py`), streamed as Arrow record batches.

Every reader yields batches holding exactly `schema.input_columns()` with fixed types
(features and group as strings or float64, label as float64 or string), so the encoder
never sees format details. Files are read in blocks, so a file larger than memory streams.
Errors name the file, the line and the column, and say how to fix them.
"""

from __future__ import annotations

import csv
import functools
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv

from mtkd.data.file_hints import (check_not_compressed, check_text_line, data_as_header, look_alike, other_delimiter,
                                  preview)
from mtkd.data.lines import count_lines, nonempty_lines
from mtkd.data.schema import Schema
from mtkd.errors import DataError

NULL_VALUES = ["", "NA", "NaN", "nan", "NULL", "null", "None", "N/A"]
# what Arrow parses as a float: NaN spellings too (missing values), so they are not named as the bad value
_FLOAT_RE = r"^\s*[-+]?(\d+\.?\d*([eE][-+]?\d+)?|\.\d+([eE][-+]?\d+)?|inf|Inf|INF|infinity|Infinity|[nN][aA][nN])\s*$"
DEFAULT_BLOCK = 2 << 20  # bytes parsed per Arrow block: small blocks stay in cache and parse fastest
CHUNK_ROWS = 65536  # rows handed to the encoder at once: large enough to amortise per-call costs


def column_types(schema: Schema) -> dict[str, pa.DataType]:
    """Arrow type each input column is read as."""
    types: dict[str, pa.DataType] = {}
    for name, spec in schema.specs():
        types[name] = pa.float64() if spec.type == "numeric" else pa.string()
    types[schema.label] = pa.float64() if schema.task == "binary" and not schema.label_values else pa.string()
    if schema.group:
        types[schema.group] = pa.string()
    for s in schema.scores:
        types[s] = pa.float64()
    return types


class RawReader:
    """Base: `batches()` yields typed record batches; `header_lines` maps rows to file lines."""

    header_lines = 0

    def __init__(self, path: str | Path, schema: Schema, block_size: int = DEFAULT_BLOCK, need_label: bool = True):
        self.path = Path(path)
        self.schema = schema
        self.block_size = block_size
        # scoring (`mtkd predict`) reads the model's inputs only: not the label, the group (an
        # evaluation key) or the score columns (the legacy model the student replaces)
        unread = {schema.label, schema.group, *schema.scores}
        self.columns = [c for c in schema.input_columns() if need_label or c not in unread]
        # every column of the file, used or not (a CSV header's `id`): a served row may carry them
        self.file_columns: list[str] = list(self.columns)
        self.types = column_types(schema)
        if not self.path.exists():
            raise DataError(f"{self.path}: file not found (check the path)")
        if self.path.is_dir():
            raise DataError(f"{self.path}: is a directory, expected a data file")
        if self.path.stat().st_size == 0:
            raise DataError(f"{self.path}: file is empty (0 bytes); expected rows of data")
        check_not_compressed(self.path)
        self.scoring = not need_label

    def _check_columns(self, names: list[str], fix: str, hint: str | None = None) -> None:
        """Every column the schema reads is in the file; a file to score is told to match the
        training columns (the schema is the model's and is not the thing to change)."""
        missing = [c for c in self.columns if c not in names]
        if missing:
            fix = hint or ("Give the file the columns the model was trained on (rename or add them; the "
                           "label may be left out)." if self.scoring else fix)
            raise DataError(f"{self.path}: the schema names column(s) {missing} that the file lacks; "
                            f"the file has {len(names)} columns: {preview(names)}. {fix}{look_alike(missing, names)}")

    def where(self, row: int) -> str:
        """Data row `row` (0-based) as an error message names it: the file's line for text."""
        return f"line {self.line_of(row)}"

    def line_of(self, row: int) -> int:
        """1-based line number in the file of data row `row` (0-based); used for error messages.

        Counts non-empty lines, because the parser skips empty ones.
        """
        k = row + self.header_lines
        for numbers in nonempty_lines(self.path):
            if k < numbers.size:
                return int(numbers[k])
            k -= numbers.size
        return row + 1 + self.header_lines

    def batches(self) -> Iterator[pa.RecordBatch]:
        """Record batches of about CHUNK_ROWS rows (small parse blocks regrouped)."""
        pending: list[pa.RecordBatch] = []
        rows = 0
        for b in self._blocks():
            pending.append(_nan_as_missing(b))
            rows += b.num_rows
            if rows >= CHUNK_ROWS:
                yield _combine(pending)
                pending, rows = [], 0
        if pending:
            yield _combine(pending)

    def _blocks(self) -> Iterator[pa.RecordBatch]:
        raise NotImplementedError

    def count_rows(self) -> int:
        raise NotImplementedError


def _combine(batches: list[pa.RecordBatch]) -> pa.RecordBatch:
    if len(batches) == 1:
        return batches[0]
    table = pa.Table.from_batches(batches).combine_chunks()
    return pa.RecordBatch.from_arrays([c.chunk(0) for c in table.columns], names=table.column_names)


def _nan_as_missing(batch: pa.RecordBatch) -> pa.RecordBatch:
    """NaN in a float column is a missing value (gets fill_na), however it was spelt: Arrow
    parses `-nan`, `NAN`, `+nan` (and Parquet stores NaN) as a float NaN that would wipe out a
    standardised column's mean in every split."""
    cols, changed = list(batch.columns), False
    for i, col in enumerate(cols):
        if pa.types.is_floating(col.type) and (fixed := nan_as_null(col)) is not col:
            cols[i], changed = fixed, True
    return pa.RecordBatch.from_arrays(cols, schema=batch.schema) if changed else batch


def nan_as_null(col: pa.Array) -> pa.Array:
    """A float column with its NaNs as nulls (the same array when it has none)."""
    if col.null_count == len(col):
        return col
    nan = pc.is_nan(col)
    return pc.if_else(nan, pa.scalar(None, col.type), col) if pc.any(nan).as_py() else col


class DelimitedReader(RawReader):
    """CSV / TSV with or without a header line."""

    def __init__(self, path: str | Path, schema: Schema, block_size: int = DEFAULT_BLOCK, need_label: bool = True):
        super().__init__(path, schema, block_size, need_label)
        self.delimiter = schema.delimiter or ("\t" if schema.format == "tsv" else ",")
        self.header_lines = 1 if schema.header else 0
        self.csv_quoting = csv.QUOTE_MINIMAL if schema.quoting else csv.QUOTE_NONE  # for Python's csv module
        # Arrow is given the names itself when the header is renamed or padded (`label, I1, C1`)
        self.file_columns, self._rename = self._file_columns()
        hint = other_delimiter(self.file_columns, self.delimiter) or data_as_header(self.file_columns, self.scoring)
        self._check_columns(self.file_columns, "Fix the column names in the schema (or `columns:` for files without a header).", hint)

    def _first_line(self) -> str:
        with open(self.path, "rb") as f:
            raw = f.readline(256 << 20)  # a header of 90,000 long names passes 1 MiB
        check_text_line(self.path, raw)
        if self.schema.header and not _utf8(raw):  # names read as U+FFFD: "lacks column 'café'" otherwise
            raise DataError(f"{self.path}: line 1 (the header) has bytes that are not UTF-8. Save the file as "
                            f"UTF-8 (from Latin-1: `iconv -f latin1 -t utf-8 {self.path.name} > fixed.csv`).")
        return raw.decode("utf-8", errors="replace").lstrip("\ufeff").rstrip("\r\n")

    def _file_columns(self) -> tuple[list[str], bool]:
        """The file's column names, and whether they differ from the header line as written."""
        first = self._first_line()
        if not first.strip():
            raise DataError(f"{self.path}: line 1 is blank; expected a header or a data row")
        fields = next(csv.reader([first], delimiter=self.delimiter, quoting=self.csv_quoting))
        if self.schema.columns is None:
            names = [f.strip() for f in fields]
            if twice := sorted({c for c in self.columns if names.count(c) > 1}):
                raise DataError(f"{self.path}: line 1 names column(s) {twice} more than once; the schema reads "
                                "them by name, so rename the copies (or drop them) in the header")
            return names, names != fields
        names = list(self.schema.columns)  # no header, or a header renamed (`header: true` and `columns:`)
        if self.scoring and len(fields) == len(names) - 1 and self.schema.label in names:
            names.remove(self.schema.label)  # traffic to score: the training columns less the label
        if len(fields) != len(names):
            fix = (f"give the file the training files' {len(names)} columns in their order, or all but the label "
                   f"{self.schema.label!r}" if self.scoring else "list one name per column in file order")
            raise DataError(f"{self.path}: line 1 has {len(fields)} columns but the schema's `columns:` lists "
                            f"{len(names)}; {fix} (delimiter {self.delimiter!r}).")
        return names, True

    def _options(self, types: dict[str, pa.DataType], include: list[str]):
        read = pcsv.ReadOptions(
            block_size=self.block_size,
            column_names=self.file_columns if self._rename else None,
            skip_rows=1 if self.schema.header and self._rename else 0,
            use_threads=True,
        )
        # a quoted field may hold a newline: without newlines_in_values the chunker splits blocks at
        # any newline and the parser fails ("out of sync") once a file is past one block (no cost measured)
        parse = pcsv.ParseOptions(delimiter=self.delimiter, quote_char='"' if self.schema.quoting else False,
                                  newlines_in_values=self.schema.quoting)
        conv = pcsv.ConvertOptions(
            column_types={c: types[c] for c in include},
            include_columns=include,
            null_values=NULL_VALUES,
            strings_can_be_null=True,
            quoted_strings_can_be_null=True,
        )
        return read, parse, conv

    def _blocks(self) -> Iterator[pa.RecordBatch]:
        read, parse, conv = self._options(self.types, self.columns)
        rows = 0
        try:
            reader = pcsv.open_csv(self.path, read_options=read, parse_options=parse, convert_options=conv)
            for batch in reader:
                rows += batch.num_rows
                yield batch
        except pa.ArrowInvalid as exc:
            if self.scoring and "Empty CSV file" in str(exc):
                return  # a header alone: nothing to score is an empty answer, not an error
            raise self._explain(str(exc)) from None
        if rows == 0 and not self.scoring:
            raise DataError(f"{self.path}: no data rows (only a header?); expected at least one row")

    def _explain(self, msg: str) -> DataError:
        """Turn an Arrow parse/convert error into one with file, line and column."""
        m = re.search(r"Expected (\d+) columns, got (\d+)", msg)
        if m:
            line, got = self._find_bad_width(int(m.group(1)))
            return DataError(
                f"{self.path}: line {line}: expected {m.group(1)} columns (delimiter {self.delimiter!r}), "
                f"got {got}. Fix or remove that line, or check the delimiter/format in the schema."
            )
        m = re.search(r"In CSV column #(\d+): .*conversion error to (\w+): invalid value '(.*)'", msg)
        if m:
            col = self.file_columns[int(m.group(1))]
            line, raw = self._find_bad_number(col)
            where = f"line {line}, " if line else ""
            if col == self.schema.label:
                what = "the label"
                fix = "binary labels must be 0 or 1, or name text labels with `label_values: [negative, positive]`"
            elif col in self.schema.scores:
                what, fix = "a score column", "fix the value"
            else:
                what = "a numeric column"
                fix = ("the model was trained on numbers in it: fix the value, or leave it empty (missing)"
                       if self.scoring else "fix the value, or declare the column `type: categorical` in the schema")
            value = m.group(3) if raw is None else raw  # Arrow's message trims it: " " read as ''
            return DataError(f"{self.path}: {where}column {col!r}: {value!r} is not a number, but {col!r} "
                             f"is {what}; {fix}.")
        m = re.search(r"In CSV column #(\d+): .*invalid UTF8", msg)
        if m:
            col = self.file_columns[int(m.group(1))] if int(m.group(1)) < len(self.file_columns) else None
            line = self._find_bad_utf8(col)
            where = (f"line {line}, " if line else "") + (f"column {col!r}: " if col else "")
            return DataError(f"{self.path}: {where}bytes that are not UTF-8. Save the file as UTF-8 "
                             f"(from Latin-1: `iconv -f latin1 -t utf-8 {self.path.name} > fixed.csv`).")
        if "Empty CSV file" in msg:  # a header without a line end, and nothing else
            return DataError(f"{self.path}: no data rows (only a header?); expected at least one row")
        return DataError(f"{self.path}: cannot parse as {self.schema.format}: {msg}")

    def _records(self) -> Iterator[tuple[int, list[str]]]:
        """(first line, fields) of each non-empty record: a quoted field may span lines."""
        with open(self.path, newline="", encoding="utf-8", errors="replace") as f:
            reader = csv.reader(f, delimiter=self.delimiter, quoting=self.csv_quoting)
            prev = 0
            for fields in reader:
                if fields:
                    yield prev + 1, fields
                prev = reader.line_num

    @functools.cached_property
    def _multiline(self) -> bool:
        """Whether a record may span lines (quoting on and a quote in the file); else line
        numbers come from counting newlines, which is fast on any size."""
        if not self.schema.quoting:
            return False
        with open(self.path, "rb") as f:
            while block := f.read(16 << 20):
                if b'"' in block:
                    return True
        return False

    def line_of(self, row: int) -> int:
        if not self._multiline:
            return super().line_of(row)
        k = row + self.header_lines
        for line, _ in self._records():
            if k == 0:
                return line
            k -= 1
        return row + 1 + self.header_lines

    def _find_bad_width(self, expected: int) -> tuple[int, int]:
        for line, fields in self._records():
            if len(fields) != expected:
                return line, len(fields)
        return 0, 0

    def _find_bad_utf8(self, col: str | None) -> int:
        """The line of the first value of `col` that is not UTF-8 (of any line when `col` is None):
        a bad byte in a column the schema does not read is not the one Arrow refused."""
        if col is None or col not in self.types:
            with open(self.path, "rb") as f:
                return next((i for i, raw in enumerate(f, start=1) if not _utf8(raw)), 0)
        types = {**self.types, col: pa.binary()}
        read, parse, conv = self._options(types, [col])
        rows = 0
        for batch in pcsv.open_csv(self.path, read_options=read, parse_options=parse, convert_options=conv):
            values = batch.column(0)
            try:
                values.cast(pa.string())  # the block is valid: on to the next
            except pa.ArrowInvalid:
                i = next(i for i, v in enumerate(values.to_pylist()) if v is not None and not _utf8(v))
                return self.line_of(rows + i)
            rows += batch.num_rows
        return 0

    def _find_bad_number(self, col: str) -> tuple[int, str | None]:
        """(line, value as the file has it) of the first value of `col` that is no number; (0, None)
        when none is found."""
        types = dict(self.types)
        types[col] = pa.binary()  # bytes: a value that is not UTF-8 is a bad number too
        read, parse, conv = self._options(types, [col])
        rows = 0
        for batch in pcsv.open_csv(self.path, read_options=read, parse_options=parse, convert_options=conv):
            ok = pc.fill_null(pc.match_substring_regex(batch.column(0), _FLOAT_RE), True)
            bad = np.flatnonzero(~ok.to_numpy(zero_copy_only=False))
            if bad.size:
                raw = batch.column(0)[int(bad[0])].as_py()
                return self.line_of(rows + int(bad[0])), raw.decode("utf-8", "replace")
            rows += batch.num_rows
        return 0, None

    def count_rows(self) -> int:
        if not self._multiline:
            return count_lines(self.path) - self.header_lines
        first = self.columns[:1]  # records, not lines: parse one column
        read, parse, conv = self._options({c: pa.string() for c in first}, first)
        try:
            return sum(b.num_rows for b in pcsv.open_csv(self.path, read_options=read, parse_options=parse,
                                                         convert_options=conv))
        except pa.ArrowInvalid as exc:
            raise self._explain(str(exc)) from None


def _utf8(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


def first_non_number(arr: pa.Array, null_ok: bool = False) -> int:
    """Index of the first value that does not parse as a number (0 if none is found)."""
    ok = pc.fill_null(pc.match_substring_regex(arr, _FLOAT_RE), null_ok).to_numpy(zero_copy_only=False)
    bad = np.flatnonzero(~ok)
    return int(bad[0]) if bad.size else 0


def open_reader(path: str | Path, schema: Schema, block_size: int = DEFAULT_BLOCK,
                need_label: bool = True) -> RawReader:
    """The reader for the schema's format (`need_label=False`: a file to score, label optional)."""
    if schema.format in ("csv", "tsv"):
        return DelimitedReader(path, schema, block_size, need_label)
    if schema.format == "parquet":
        from mtkd.data.parquet import ParquetReader  # the other readers build on RawReader, defined here

        return ParquetReader(path, schema, block_size, need_label)
    from mtkd.data.libfm import LibFMReader

    return LibFMReader(path, schema, block_size, need_label)
