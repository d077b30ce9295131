"""Scorer: raw rows in, probabilities out, with the encoder the model was trained with.

One object behind `mtkd predict` and `mtkd serve`. It loads either a run directory (PyTorch,
the run's best weights; the encoder and schema from its dataset) or an export directory
(`mtkd export`: ONNX Runtime, or the TorchScript module; encoder and schema copied beside the
model, so the dataset is not needed). Rows are encoded in whole Arrow batches by the same `Encoder.transform` that prepared
the training data, so an id unseen in training maps to OOV exactly as it did there.
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from mtkd.data.batch import Batch
from mtkd.data.encoder import Encoder
from mtkd.data.readers import NULL_VALUES, column_types
from mtkd.data.schema import Schema, load_schema
from mtkd.errors import MtkdError

ONNX_FILE = "model.onnx"
TORCHSCRIPT_FILE = "model.ts"
ENGINE_FILES = {"onnx": ONNX_FILE, "torchscript": TORCHSCRIPT_FILE}  # in order of preference


def batch_arrays(b: Batch) -> dict[str, np.ndarray]:
    """A loader batch's inputs as the arrays `Encoder.transform` gives (cat, num, seq_<name>)."""
    out = {} if b.cat is None else {"cat": b.cat.numpy()}
    if b.num is not None:
        out["num"] = b.num.numpy()
    return {**out, **{f"seq_{k}": v.numpy() for k, v in b.seq.items()}}


def model_inputs(arrays: dict[str, np.ndarray], names: list[str]) -> dict[str, np.ndarray]:
    """The model's input arrays by name, in the dtypes the exported graph takes (ids int64)."""
    out = {}
    for n in names:
        a = arrays[n]
        out[n] = a.astype(np.int64, copy=False) if n == "cat" or n.startswith("seq_") else a.astype(np.float32, copy=False)
    return out


def onnx_name(key: str) -> str:
    """The graph input name of an array key (distinct from op names such as `cat`, which the
    exporter also uses for the values it defines)."""
    if key == "cat":
        return "categorical_ids"
    if key == "num":
        return "numeric_values"
    return "sequence_ids_" + key[4:]


def input_names(schema: Schema) -> list[str]:
    names = (["cat"] if schema.categorical() else []) + (["num"] if schema.numeric() else [])
    return names + [f"seq_{n}" for n, _ in schema.sequences()]


class ProbabilityHead(torch.nn.Module):
    """A trained model as a function of its input arrays: probability [B] (binary) or [B, C]."""

    def __init__(self, model: torch.nn.Module, names: list[str], binary: bool):
        super().__init__()
        self.model, self.names, self.binary = model, names, binary

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        x = dict(zip(self.names, inputs))
        first = inputs[0]
        b = Batch(label=first[:, 0].float(), index=first[:, 0].long(), cat=x.get("cat"), num=x.get("num"),
                  seq={k[4:]: v for k, v in x.items() if k.startswith("seq_")})
        z = self.model(b).logits
        return torch.sigmoid(z) if self.binary else torch.softmax(z, dim=-1)


class Scorer:
    """Load with `Scorer.open(path)`: a run directory (PyTorch) or an export directory (ONNX
    Runtime or TorchScript)."""

    def __init__(self, schema: Schema, encoder: Encoder, names: list[str], engine: str,
                 head: torch.nn.Module | None = None, session: Any = None, source: Path | None = None,
                 dataset: Any = None, model_name: str | None = None, source_columns: list[str] | None = None):
        self.schema, self.encoder, self.names, self.engine = schema, encoder, names, engine
        self.head, self.session, self.source = head, session, source
        self.dataset, self.model_name = dataset, model_name  # a run's training data and model (not an export's)
        self.binary = schema.task == "binary"
        self.classes: list[str] = list(getattr(encoder, "classes", []) or [])
        self.types = column_types(schema)
        self.features = [n for n, _ in schema.specs()]
        self.arrow_schema = pa.schema([(n, self.types[n]) for n in self.features])
        # keys a row may carry and the model does not read: the label, and the training files'
        # other columns (a log row with its `id`), as `mtkd predict` reads such a file
        self.ignored = {schema.label, *(source_columns or [])} - set(self.features)
        # "", "NA", ... are missing as the text readers read them (a libFM value is never one of
        # them); a Parquet file's strings are values as they are: its "NA" has an embedding of its own
        self.text_nulls = schema.format != "parquet"

    @classmethod
    def open(cls, path: str | Path, engine: str | None = None, data: str | Path | None = None) -> "Scorer":
        """`engine` picks one format of an export directory (default: ONNX when it is there);
        `data` is a run's dataset where it moved (an export carries its encoder)."""
        path = Path(path)
        found = cls.engines(path)
        if not found and (path / "config.yaml").exists():
            return cls._from_run(path, Path(data) if data is not None else None)
        if not found:
            if not path.is_dir():
                raise MtkdError(f"{path}: no such directory; pass a run directory (`mtkd train --out`) or an "
                                "export directory (`mtkd export --out`)")
            inside = cls._loadable_below(path)
            hint = (f"; it holds {', '.join(inside)}: pass one of those" if inside else
                    "; train with `mtkd train` or export with `mtkd export`")
            raise MtkdError(f"{path}: neither a run directory (config.yaml, best.pt) nor an export directory "
                            f"({' or '.join(ENGINE_FILES.values())}){hint}")
        engine = engine or found[0]
        if engine not in found:
            raise MtkdError(f"{path}: has no {engine} model (it holds {', '.join(found)}); export it with "
                            f"`mtkd export RUN --format {engine}`")
        return cls._from_export(path, engine)

    @classmethod
    def _loadable_below(cls, path: Path, limit: int = 8) -> list[str]:
        """Subdirectories that are runs or exports: a parent such as `exports/` is a common mistake."""
        found = sorted(str(d) for d in path.iterdir()
                       if d.is_dir() and (cls.engines(d) or (d / "config.yaml").exists()))
        return found[:limit] + ([f"... ({len(found) - limit} more)"] if len(found) > limit else [])

    @staticmethod
    def engines(path: str | Path) -> list[str]:
        """The exported formats a directory holds, in order of preference."""
        return [e for e, f in ENGINE_FILES.items() if (Path(path) / f).exists()]

    @classmethod
    def _from_run(cls, run: Path, data: Path | None = None) -> "Scorer":
        from mtkd.train.run import load_run

        cfg, dataset, model = load_run(run, "cpu", data)
        schema = load_schema(dataset.root / "schema.yaml")
        encoder = Encoder.load(dataset.root / "encoder.json", schema)
        names = input_names(schema)
        head = ProbabilityHead(model, names, schema.task == "binary").eval()
        return cls(schema, encoder, names, "torch", head=head, source=run, dataset=dataset, model_name=cfg.model,
                   source_columns=dataset.manifest.get("source_columns"))

    @classmethod
    def _from_export(cls, export: Path, engine: str) -> "Scorer":
        schema = load_schema(export / "schema.yaml")
        encoder = Encoder.load(export / "encoder.json", schema, exported=True)
        names = input_names(schema)
        meta = export / "export.json"
        columns = json.loads(meta.read_text()).get("source_columns") if meta.exists() else None
        if engine == "torchscript":
            with warnings.catch_warnings():  # torch marks TorchScript deprecated; the export says why it is kept
                warnings.simplefilter("ignore", DeprecationWarning)
                head = torch.jit.load(str(export / TORCHSCRIPT_FILE), map_location="cpu").eval()
            return cls(schema, encoder, names, engine, head=head, source=export, source_columns=columns)
        try:
            import onnxruntime as ort
        except ImportError as e:  # pragma: no cover - installed with the project
            raise MtkdError("scoring an ONNX export needs onnxruntime: pip install onnxruntime") from e
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = torch.get_num_threads()
        try:
            session = ort.InferenceSession(str(export / ONNX_FILE), opts, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own classes; a missing weights file is the usual cause
            data = export / f"{ONNX_FILE}.data"
            hint = (f"; its weights are in {data.name} beside it, which is missing: copy the whole export directory"
                    if "external" in str(e).lower() or ".data" in str(e) else
                    "; export the run again (mtkd export RUN --out DIR)")
            raise MtkdError(f"{export / ONNX_FILE}: onnxruntime cannot load it ({str(e).strip()[-300:]}){hint}") from None
        graph = {i.name for i in session.get_inputs()}
        if graph != {onnx_name(n) for n in names}:
            raise MtkdError(f"{export / ONNX_FILE}: its inputs {sorted(graph)} do not fit {export / 'schema.yaml'} "
                            f"(expected {sorted(onnx_name(n) for n in names)}); export the run again")
        return cls(schema, encoder, names, engine, session=session, source=export, source_columns=columns)

    # -- scoring ------------------------------------------------------------------------
    def score_arrays(self, arrays: dict[str, np.ndarray]) -> np.ndarray:
        """Probabilities for encoded arrays (`Encoder.transform` output): [n] binary, [n, C] multi-class."""
        x = model_inputs(arrays, self.names)
        if self.engine == "onnx":
            return self.session.run(None, {onnx_name(k): v for k, v in x.items()})[0]
        with torch.inference_mode():
            return self.head(*(torch.from_numpy(x[n]) for n in self.names)).numpy()

    def score_batch(self, batch: pa.RecordBatch) -> np.ndarray:
        arrays = self.encoder.transform(batch)
        p = self.score_arrays(arrays)
        if not np.isfinite(p).all():  # NaN would leave as a probability (and as invalid JSON)
            self._not_a_number(p, arrays)
        return p

    def _not_a_number(self, p: np.ndarray, arrays: dict[str, np.ndarray]) -> None:
        """Name the row the model gave NaN, and its numeric value farthest from 0 after encoding:
        finite inputs overflow inside the model (an FM's square of 1e29 is inf, inf - inf NaN)."""
        from mtkd.data.value_checks import OutOfRange

        row = int(np.flatnonzero(~np.isfinite(p.reshape(len(p), -1)).all(1))[0])
        numeric = [name for name, _ in self.schema.numeric()]
        if numeric and "num" in arrays:
            j = int(np.abs(arrays["num"][row]).argmax())
            raise OutOfRange(row, numeric[j], f"the model's output for this row is not a number: its value "
                             f"{arrays['num'][row, j]:g} (encoded) overflows inside the model; add `log` to the "
                             "column's transforms (or clip it), prepare and train again")
        raise OutOfRange(row, "(all)", "the model's output for this row is not a number; its weights may hold "
                                       "NaN or inf: train it again")

    def rows_to_batch(self, rows: list[dict[str, Any]], booleans: bool = True) -> pa.RecordBatch:
        """JSON-style rows -> a typed record batch of the feature columns; a missing key is a missing value.
        `booleans=False` says the rows hold no true/false (the server sees it in the body's bytes
        at ~1 us), which spares the scan for them."""
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
            raise MtkdError('expected "rows": a list of objects, one per row, keyed by column name')
        if booleans:
            _refuse_booleans(rows)
        known = {*self.features, *self.ignored}
        if not known.issuperset(set().union(*rows)):  # one C-level union; find the row only on error
            i, unknown = next((i, sorted(set(r) - known)) for i, r in enumerate(rows) if set(r) - known)
            raise MtkdError(f"row {i}: unknown column(s) {unknown}; the model's columns are "
                            f"{', '.join(self.features)}")
        try:  # Arrow converts the rows in C++ (2x faster at 256 rows) when every value has its type
            batch = pa.RecordBatch.from_pylist(rows, schema=self.arrow_schema)
        except (pa.ArrowInvalid, pa.ArrowTypeError):  # ids as JSON numbers, numbers as strings, a bad value
            batch = self._by_column(rows)
        _check_finite(batch, rows)
        return _missing_as_in_files(batch, rows) if self.text_nulls else batch

    def _by_column(self, rows: list[dict[str, Any]]) -> pa.RecordBatch:
        """Column by column, converting what a JSON client may send and naming a value that does not fit."""
        cols = {}
        for name in self.features:
            numeric = pa.types.is_floating(self.types[name])
            values = [r.get(name) for r in rows]
            if not numeric and (bad := next((i for i, v in enumerate(values) if isinstance(v, (dict, list))), None)) is not None:
                raise MtkdError(f"row {bad}, column {name!r}: {json.dumps(values[bad])[:80]} is not a single value; "
                                "send a string, a number or null (missing)")
            if not numeric and (bad := next((i for i, v in enumerate(values) if isinstance(v, float)
                                             and not math.isfinite(v)), None)) is not None:
                # str() would make it the id "nan" (unseen), or missing where "nan" is a null spelling
                raise MtkdError(f"row {bad}, column {name!r}: {values[bad]} is not a finite number; send the value "
                                "as the training file has it, or null (missing)")
            values = [_number(v) for v in values] if numeric else [None if v is None else str(v) for v in values]
            try:
                cols[name] = pa.array(values, type=self.types[name], from_pandas=True)
            except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
                bad = next((i for i, v in enumerate(values) if not _fits(v, self.types[name])), "?")
                what = "a number; send 3, 0.5, \"3\" or null (missing)" if numeric else "a string"
                raise MtkdError(f"row {bad}, column {name!r}: {values[bad] if bad != '?' else ''!r} is not "
                                f"{what} ({e})") from None
        return pa.RecordBatch.from_pydict(cols)


_NULLS = pa.array(NULL_VALUES)
_NULL_SET = frozenset(NULL_VALUES)


def _missing_as_in_files(batch: pa.RecordBatch, rows: list[dict[str, Any]]) -> pa.RecordBatch:
    """"", "NA", "null", ... in a string column are missing values, as the file readers read
    them in training: otherwise a JSON client's "" would score as an unseen id (OOV), not as
    missing. The check is a set test over a few rows' values (~3 us for one row), one Arrow
    `is_in` over all string columns for more; columns are rebuilt only where one is found."""
    strings = [i for i, t in enumerate(batch.schema.types) if pa.types.is_string(t)]
    if not strings or batch.num_rows == 0:
        return batch
    if len(rows) <= 16:
        if _NULL_SET.isdisjoint(v for r in rows for v in r.values() if v.__class__ is str):
            return batch
    elif not pc.any(pc.is_in(pa.chunked_array([batch.column(i) for i in strings]), value_set=_NULLS)).as_py():
        return batch
    cols = list(batch.columns)
    for i in strings:
        cols[i] = pc.if_else(pc.is_in(cols[i], value_set=_NULLS), pa.scalar(None, pa.string()), cols[i])
    return pa.RecordBatch.from_arrays(cols, schema=batch.schema)


def _refuse_booleans(rows: list[dict[str, Any]]) -> None:
    """JSON true/false would score as 1/0 in a numeric column (Arrow converts them) and as the
    unseen id "True" in a categorical one: neither is how a training file spells its values."""
    for i, r in enumerate(rows):
        for k, v in r.items():
            if v.__class__ is bool:
                raise MtkdError(f"row {i}, column {k!r}: {json.dumps(v)} is a JSON boolean; send the value as the "
                                'training file has it (1 / 0 for a number, a string such as "true" for a category)')


def _check_finite(batch: pa.RecordBatch, rows: list[dict[str, Any]]) -> None:
    """JSON's NaN / Infinity would be answered with NaN (not JSON): refused with row and column.
    Few rows: a test of their float values (~2 us for one row); more: Arrow per float column
    (~8 us a column, too slow for the one-row requests that dominate serving)."""
    if len(rows) <= 16 and all(math.isfinite(v) for r in rows for v in r.values() if v.__class__ is float):
        return
    for name, col in zip(batch.schema.names, batch.columns):
        if not pa.types.is_floating(col.type) or col.null_count == len(col):
            continue
        finite = pc.fill_null(pc.is_finite(col), True)
        if not pc.all(finite).as_py():
            i = int(np.flatnonzero(~finite.to_numpy(zero_copy_only=False))[0])
            raise MtkdError(f"row {i}, column {name!r}: {col[i].as_py()} is not a finite number; send a "
                            "finite value or null (missing)")


def _number(v: Any) -> Any:
    """A numeric string as its float, "" / "NA" / ... as missing (as the readers do); else as it
    came. Infinite and NaN values stay as they came, so `_fits` refuses them (a NaN answer is
    not JSON; `mtkd data prepare` refuses them in training files too)."""
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    if isinstance(v, int) and not isinstance(v, bool):  # past int64 Arrow refuses it as a float too
        try:
            return float(v)
        except OverflowError:  # past float64: not a finite number
            return str(v)
    if not isinstance(v, str):
        return v
    if v in _NULL_SET:
        return None
    try:
        x = float(v)
    except ValueError:
        return v
    if math.isnan(x):  # "NAN", "-nan": missing, as every spelling of NaN is in a file
        return None
    return x if math.isfinite(x) else v


def _fits(v: Any, t: pa.DataType) -> bool:
    if v is None:
        return True
    if pa.types.is_floating(t):
        return isinstance(v, (int, float)) and not isinstance(v, bool)
    return isinstance(v, str)

