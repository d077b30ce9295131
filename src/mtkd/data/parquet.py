"""Parquet files, read row group by row group into the same typed record batches as every
other reader: columns cast to the schema's types, rows named by number (a Parquet file has no
lines)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from mtkd.data.readers import CHUNK_ROWS, DEFAULT_BLOCK, RawReader, first_non_number, nan_as_null
from mtkd.data.schema import Schema
from mtkd.errors import DataError


class ParquetReader(RawReader):
    def __init__(self, path: str | Path, schema: Schema, block_size: int = DEFAULT_BLOCK, need_label: bool = True):
        super().__init__(path, schema, block_size, need_label)
        try:
            self.file = pq.ParquetFile(self.path)
        except (pa.ArrowInvalid, OSError) as exc:
            raise DataError(f"{self.path}: not a readable Parquet file ({exc})") from None
        names = self.file.schema_arrow.names
        self.file_columns = list(names)
        self._check_columns(list(names), "Fix the column names in the schema.")
        if self.file.metadata.num_rows == 0 and not self.scoring:
            raise DataError(f"{self.path}: file has no rows")

    def line_of(self, row: int) -> int:
        return row + 1  # Parquet has no lines: `where` names rows instead

    def where(self, row: int) -> str:
        return f"row {row} (counting from 0, as pyarrow and pandas do)"  # predict's `row` column counts so too

    def _blocks(self) -> Iterator[pa.RecordBatch]:
        rows = 0
        for batch in self.file.iter_batches(batch_size=CHUNK_ROWS, columns=self.columns):
            arrays = []
            for name in self.columns:
                arr = batch.column(name)
                want = self.types[name]
                if arr.type != want:
                    if pa.types.is_floating(arr.type) and not pa.types.is_floating(want):
                        arr = nan_as_null(arr)  # pandas stores a missing int id as NaN: missing, not the id "nan"
                    try:
                        arr = pc.cast(arr, want)
                    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                        where = ""
                        if pa.types.is_string(arr.type) and pa.types.is_floating(want):
                            where = f"{self.where(rows + first_non_number(arr, null_ok=True))}, "
                        raise DataError(
                            f"{self.path}: {where}column {name!r} of type {arr.type} cannot be read as {want} "
                            f"({exc}). Fix the column or its type in the schema."
                        ) from None
                arrays.append(arr)
            rows += batch.num_rows
            yield pa.RecordBatch.from_arrays(arrays, names=self.columns)

    def count_rows(self) -> int:
        return self.file.metadata.num_rows
