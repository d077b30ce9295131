"""libFM / libSVM files (`label idx:val idx:val ...`, one token per field in field order), read
block by block into the same typed record batches as every other reader."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv

from mtkd.data.lines import count_lines
from mtkd.data.readers import DEFAULT_BLOCK, RawReader, first_non_number
from mtkd.data.schema import Schema
from mtkd.errors import DataError

# a categorical token: a non-empty index without quotes or colons, one colon, a numeric value
_CATEGORICAL_TOKEN = r'^[^:"]+:[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$'


class LibFMReader(RawReader):
    """libFM / libSVM lines `label idx:val idx:val ...` with one token per field, in field order.

    Fields are named by the schema's `columns:`. A categorical field takes the index as its
    value (`idx:0`, a one-hot entry switched off, is a missing value); a numeric field takes the
    value. Binary labels -1/+1 (or 0/1) become 0/1; multi-class labels are class names.
    """

    def __init__(self, path: str | Path, schema: Schema, block_size: int = DEFAULT_BLOCK, need_label: bool = True):
        super().__init__(path, schema, block_size, need_label)
        self.fields = [c for c in (schema.columns or []) if c != schema.label]
        self.raw_names = ["__label__"] + self.fields

    def _blocks(self) -> Iterator[pa.RecordBatch]:
        # Whole lines, split on runs of whitespace: libSVM writers often leave a trailing space
        # or use tabs, which a one-space delimiter would turn into extra (empty) tokens.
        read = pcsv.ReadOptions(block_size=self.block_size, column_names=["line"], use_threads=True)
        parse = pcsv.ParseOptions(delimiter="\x1f", quote_char=False, escape_char=False)
        conv = pcsv.ConvertOptions(column_types={"line": pa.string()})
        rows = 0
        try:
            for batch in pcsv.open_csv(self.path, read_options=read, parse_options=parse, convert_options=conv):
                yield self._convert(self._tokens(batch.column(0), rows), rows)
                rows += batch.num_rows
        except pa.ArrowInvalid as exc:
            raise DataError(f"{self.path}: cannot parse as libFM: {exc}") from None

    def _tokens(self, lines: pa.Array, start: int) -> list[pa.Array]:
        """One string array per token (label first), after checking every line has them all."""
        trimmed = pc.ascii_trim_whitespace(lines)
        parts = pc.ascii_split_whitespace(trimmed)
        n = pc.list_value_length(parts).to_numpy(zero_copy_only=False)
        unlabelled = n == len(self.fields)
        self._no_label = unlabelled & self.scoring  # per line: its tokens count from the first field
        if self.scoring and unlabelled.any():  # a file to score may leave the label out: a placeholder for it
            parts = pc.ascii_split_whitespace(pc.if_else(pa.array(unlabelled), pc.binary_join_element_wise(
                "_", trimmed, " "), trimmed))
            n = np.where(unlabelled, n + 1, n)
        bad = np.flatnonzero(n != len(self.raw_names))
        if bad.size:
            i = int(bad[0])
            want = (f"{len(self.fields)} idx:value tokens (one per field in `columns:`), after a label or without "
                    f"one, got {int(n[i])} tokens" if self.scoring else
                    f"a label and {len(self.fields)} idx:value tokens (one per field in `columns:`), got "
                    f"{max(int(n[i]) - 1, 0)} tokens")
            raise DataError(f"{self.path}: line {self.line_of(start + i)}: expected {want}. Fix the line"
                            + ("." if self.scoring else " or `columns:`."))
        return [pc.list_element(parts, j) for j in range(len(self.raw_names))]

    def _convert(self, tokens: list[pa.Array], start: int) -> pa.RecordBatch:
        # a file to score: its label (or placeholder) is not read, so `?` or any token is fine;
        # multi-class (libSVM's 1..K): the classes as written, encoded like any class column
        out = {} if self.scoring else {self.schema.label: self._labels(tokens[0], start)
                                       if self.schema.task == "binary" else tokens[0]}
        return self._fields(tokens, start, out)

    def _labels(self, label_raw: pa.Array, start: int) -> pa.Array:
        """-1/+1 (or 0/1) as 0/1; anything else is named with its line."""
        try:
            label = pc.cast(label_raw, pa.float64())
        except pa.ArrowInvalid:
            i = first_non_number(label_raw)
            raise DataError(
                f"{self.path}: line {self.line_of(start + i)}, column 1 (label): {label_raw[i].as_py()!r} "
                "is not a number; libFM labels are -1/+1 or 0/1."
            ) from None
        lab = label.to_numpy(zero_copy_only=False)
        bad = np.flatnonzero(~np.isin(lab, (-1.0, 0.0, 1.0)))
        if bad.size:
            i = int(bad[0])
            raise DataError(
                f"{self.path}: line {self.line_of(start + i)}, column 1 (label): {float(lab[i]):g} is not a "
                "libFM binary label; use -1/+1 (or 0/1)."
            )
        return pa.array(np.where(lab > 0, 1.0, 0.0))

    def _fields(self, tokens: list[pa.Array], start: int, out: dict[str, pa.Array]) -> pa.RecordBatch:
        specs = dict(self.schema.specs())
        for j, name in enumerate(self.fields, start=1):
            if name not in specs:
                continue
            if specs[name].type == "numeric":
                val = pc.struct_field(pc.extract_regex(tokens[j], r"^[^:]*:(?P<value>.*)$"), [0])
                try:
                    out[name] = pc.cast(val, pa.float64())
                    i = None if out[name].null_count == 0 else first_non_number(val)
                except pa.ArrowInvalid:
                    i = first_non_number(val)
                if i is not None:
                    raise DataError(
                        f"{self.path}: line {self.line_of(start + i)}, field {name!r} "
                        f"(token {j + 1 - self._no_label[i]}): "
                        f"{tokens[j][i].as_py()!r} is not idx:value with a numeric value; fix the token."
                    )
            else:
                ok = pc.match_substring_regex(tokens[j], _CATEGORICAL_TOKEN).to_numpy(zero_copy_only=False)
                if not ok.all():
                    i = int(np.flatnonzero(~ok)[0])
                    raise DataError(
                        f"{self.path}: line {self.line_of(start + i)}, field {name!r} "
                        f"(token {j + 1 - self._no_label[i]}): "
                        f"{tokens[j][i].as_py()!r} is not idx:value (an index, one colon, a number); "
                        "fix the token."
                    )
                pair = pc.split_pattern(tokens[j], ":", max_splits=1)
                off = pc.equal(pc.cast(pc.list_element(pair, 1), pa.float64()), 0.0)  # idx:0 is x_i = 0: absent
                out[name] = pc.if_else(off, pa.scalar(None, pa.string()), pc.list_element(pair, 0))
        return pa.RecordBatch.from_arrays([out[c] for c in self.columns], names=self.columns)

    def count_rows(self) -> int:
        return count_lines(self.path)
