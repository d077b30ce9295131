"""Encoder: fitted on the training split only, then transforms any split or new raw file.

Categorical values get ids 2.. by descending train frequency (ties by value); values seen
fewer than `min_count` times, and values never seen, get the OOV id 1; id 0 is padding.
Numeric values are filled, optionally log-transformed (sign(x) * log1p(|x|), the usual
treatment of Criteo counts), then standardised or bucketised into train-quantile bins.
"""

from __future__ import annotations

import json
import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mtkd.data.hashing import HashBuckets, HashVocab, hash_strings
from mtkd.data.schema import FeatureSpec, Schema
from mtkd.data.stats import NumericStats, VocabCounter
from mtkd.data.tokens import NEW_WHITESPACE, OLD_WHITESPACE, WHITESPACE_MODES, split_tokens
from mtkd.data.value_checks import check_class_spellings, check_float32
from mtkd.errors import DataError

PAD_ID, OOV_ID, FIRST_ID = 0, 1, 2
MISSING_TOKEN = "<NA>"
ENCODER_VERSION = 2  # 2: sequence entries record `whitespace` (absent: the old "literal")


def categorical_fill(spec: FeatureSpec) -> str:
    return MISSING_TOKEN if spec.fill_na is None else str(spec.fill_na)


def numeric_fill(spec: FeatureSpec, name: str) -> float:
    if spec.fill_na is None:
        return 0.0
    try:
        return float(spec.fill_na)
    except (TypeError, ValueError):
        raise DataError(f"feature {name!r}: fill_na {spec.fill_na!r} is not a number, but {name!r} is numeric; "
                        "give a number in the schema (e.g. fill_na: 0)") from None


def signed_log(x: np.ndarray) -> np.ndarray:
    return np.sign(x) * np.log1p(np.abs(x))


# ---------------------------------------------------------------------------- fitting
def _split_tokens(col: pa.Array, spec: FeatureSpec, whitespace: str = NEW_WHITESPACE) -> pa.Array:
    """List array of the tokens of each sequence string (see `mtkd.data.tokens`)."""
    return split_tokens(col, spec.separator, spec.lowercase, spec.split_punctuation, whitespace)


@dataclass
class EncoderFitter:
    """Accumulates train statistics chunk by chunk; `finish()` gives the Encoder."""

    schema: Schema
    counters: dict[str, VocabCounter] = field(default_factory=dict)
    stats: dict[str, NumericStats] = field(default_factory=dict)
    labels: VocabCounter = field(default_factory=VocabCounter)

    def __post_init__(self) -> None:
        for name, spec in self.schema.specs():
            if spec.type == "numeric":
                self.stats[name] = NumericStats()
            elif spec.share_embedding is None and spec.hash_buckets is None:
                self.counters[name] = VocabCounter()

    def add(self, batch: pa.RecordBatch, rows: np.ndarray, mask: np.ndarray | None = None) -> None:
        """Fit on the rows of `batch` where `mask` is true (the train rows); `rows` are global row numbers.

        Categorical columns may come dictionary-encoded (see `dictionary_encode`), which is faster.
        """
        full = mask is None or bool(mask.all())
        m = None if full else mask
        for name, spec in self.schema.specs():
            col = batch.column(name)
            if spec.type != "numeric" and self.schema.vocab_owner(name) not in self.counters:
                continue  # hashed into buckets: nothing to count
            if spec.type == "categorical":
                if not pa.types.is_dictionary(col.type):
                    col = pc.fill_null(col, categorical_fill(spec))
                self.counters[self.schema.vocab_owner(name)].add(col, m)
            elif spec.type == "sequence":
                if m is not None:
                    col = col.filter(pa.array(m))
                tokens = pc.list_flatten(_split_tokens(col, spec))
                tokens = tokens.filter(pc.not_equal(tokens, ""))
                self.counters[self.schema.vocab_owner(name)].add(tokens)
            else:
                x = _numeric_pre(col, spec, name)
                self.stats[name].add(x if m is None else x[m], rows if m is None else rows[m],
                                     sample=spec.transforms[-1] == "bucketize")
        if self.schema.task == "multiclass":
            labels = batch.column(self.schema.label)
            self.labels.add((labels if m is None else labels.filter(pa.array(m))).drop_null())

    def finish(self) -> "Encoder":
        state: dict[str, Any] = {"version": ENCODER_VERSION, "schema_hash": self.schema.hash(),
                                 "task": self.schema.task, "features": {}}
        for name, spec in self.schema.specs():
            if spec.share_embedding is not None:  # the vocabulary is stored once, under its owner
                entry: dict[str, Any] = {"type": spec.type, "share_embedding": spec.share_embedding}
                if spec.type == "categorical":
                    entry["fill_na"] = categorical_fill(spec)
                else:
                    entry.update(separator=spec.separator, max_len=spec.max_len, whitespace=NEW_WHITESPACE)
            elif spec.type in ("categorical", "sequence"):
                entry = {"type": spec.type, "hash_buckets": spec.hash_buckets} if spec.hash_buckets else \
                    {"type": spec.type, "vocab": self.counters[name].vocabulary(spec.min_count),
                     "min_count": spec.min_count}
                if spec.type == "categorical":
                    entry["fill_na"] = categorical_fill(spec)
                else:
                    entry.update(separator=spec.separator, max_len=spec.max_len, whitespace=NEW_WHITESPACE)
            else:
                st = self.stats[name]
                ts = spec.transforms
                finite = math.isfinite(st.mean) and math.isfinite(st.std)
                if not finite and "standardize" in ts:  # only standardize reads them (and NaN is not JSON)
                    raise DataError(f"column {name!r} (numeric, transforms {ts}): its values are too large for "
                                    f"their mean and spread ({st.mean:g}, {st.std:g}) in float64; add `log` "
                                    "before its other transforms, or scale the column in the file")
                entry = {"type": "numeric", "transforms": ts, "fill_na": numeric_fill(spec, name),
                         "count": st.n, "mean": st.mean if finite else None, "std": st.std if finite else None}
                if ts[-1] == "bucketize":
                    entry["edges"] = st.edges(spec.bins)
            state["features"][name] = entry
        if self.schema.task == "multiclass":
            classes = self.labels.vocabulary(1)
            check_class_spellings(classes, self.schema.label)
            state["classes"] = _sort_classes(classes)
        return Encoder(self.schema, state)


def _sort_classes(classes: list[str]) -> list[str]:
    try:
        return sorted(classes, key=float)
    except ValueError:
        return sorted(classes)


def dictionary_encode(batch: pa.RecordBatch, schema: Schema) -> pa.RecordBatch:
    """Fill missing categorical values and dictionary-encode those columns.

    Done once per block in the fitting pass; the encoded block is kept on disk so the
    encoding pass neither parses the text again nor hashes a value more than once per block.
    """
    cat = {n: f for n, f in schema.specs() if f.type == "categorical"}

    def one(name: str) -> pa.Array:
        col = batch.column(name)
        if name not in cat or pa.types.is_dictionary(col.type):
            return col
        enc = pc.dictionary_encode(col)
        if col.null_count:
            indices = pc.fill_null(enc.indices, len(enc.dictionary))
            dictionary = pa.concat_arrays([enc.dictionary, pa.array([categorical_fill(cat[name])])])
            enc = pa.DictionaryArray.from_arrays(indices, dictionary)
        return enc

    cols = list(pool().map(one, batch.schema.names))
    return pa.RecordBatch.from_arrays(cols, names=batch.schema.names)


_POOL: ThreadPoolExecutor | None = None
PARALLEL_ROWS = 4096  # batches smaller than this encode their columns on the calling thread


def pool() -> ThreadPoolExecutor:
    """Threads for per-column work: Arrow and numpy release the GIL, so columns encode in parallel."""
    global _POOL
    if _POOL is None:
        _POOL = ThreadPoolExecutor(max_workers=max(1, min(8, os.cpu_count() or 1)))
    return _POOL


def _numeric_pre(col: pa.Array, spec: FeatureSpec, name: str) -> np.ndarray:
    """Fill and log: the part of a numeric transform that comes before train statistics."""
    x = pc.fill_null(col, numeric_fill(spec, name)).to_numpy(zero_copy_only=False).astype(np.float64)
    if "log" in spec.transforms:
        x = signed_log(x)
    return x


def binary_labels(col: pa.Array, schema: Schema) -> np.ndarray:
    """A binary label column as float64: 0/1 where valid, NaN where missing, the value itself
    (not 0 or 1) where it is wrong; text labels map through `label_values`, others to 0.5."""
    if not schema.label_values:
        return col.to_numpy(zero_copy_only=False).astype(np.float64)
    neg, pos = schema.label_values
    y = np.where(col.is_null().to_numpy(zero_copy_only=False), np.nan, 0.5)
    text = pc.fill_null(col, "")
    y[pc.equal(text, neg).to_numpy(zero_copy_only=False)] = 0.0
    y[pc.equal(text, pos).to_numpy(zero_copy_only=False)] = 1.0
    return y


# ---------------------------------------------------------------------------- encoding
class Encoder:
    """A fitted encoder; `transform(batch)` returns the arrays the store writes."""

    def __init__(self, schema: Schema, state: dict[str, Any]):
        self.schema = schema
        self.state = state
        self.vocabs: dict[str, HashVocab | HashBuckets] = {}
        for name, entry in state["features"].items():
            if "vocab" in entry:
                self.vocabs[name] = HashVocab(entry["vocab"], first_id=FIRST_ID, default=OOV_ID)
            elif "hash_buckets" in entry:
                self.vocabs[name] = HashBuckets(entry["hash_buckets"], first_id=FIRST_ID)
        for name, entry in state["features"].items():
            if "share_embedding" in entry:
                self.vocabs[name] = self.vocabs[entry["share_embedding"]]
        for name, entry in state["features"].items():
            if entry.get("whitespace", OLD_WHITESPACE) not in WHITESPACE_MODES:
                raise DataError(f"feature {name!r}: the encoder's whitespace {entry['whitespace']!r} is unknown "
                                "to this mtkd version (made by a newer one?); prepare the dataset again")
        self.classes: list[str] = state.get("classes", [])
        self.class_vocab = HashVocab(self.classes, first_id=0, default=-1) if self.classes else None

    def sequence_settings(self, name: str) -> tuple[int, str]:
        """(max_len, whitespace) of a sequence as fitted: what encoder.json recorded, so an encoder
        fitted by an older mtkd keeps its tokenisation and length (see `mtkd.data.tokens`)."""
        entry = self.state["features"][name]
        max_len = entry["max_len"] if "max_len" in entry else dict(self.schema.specs())[name].max_len
        return int(max_len), entry.get("whitespace", OLD_WHITESPACE)

    # -- sizes -------------------------------------------------------------------------
    def vocab_size(self, name: str) -> int:
        entry = self.state["features"][name]
        if entry["type"] == "numeric":
            return len(entry["edges"]) + 1 + FIRST_ID
        if "share_embedding" in entry:
            return self.vocab_size(entry["share_embedding"])
        return len(self.vocabs[name]) + FIRST_ID

    def feature_map(self):
        from mtkd.data.feature_map import CategoricalField, FeatureMap, SequenceField

        s = self.schema
        return FeatureMap(
            categorical=tuple(CategoricalField(n, self.vocab_size(n), f.share_embedding) for n, f in s.categorical()),
            numeric=tuple(n for n, _ in s.numeric()),
            sequences=tuple(SequenceField(n, self.vocab_size(n), self.sequence_settings(n)[0], f.share_embedding)
                            for n, f in s.sequences()),
            task=s.task,
            num_classes=len(self.classes) if s.task == "multiclass" else 2,
            scores=tuple(s.scores),
        )

    # -- transform ---------------------------------------------------------------------
    def transform(self, batch: pa.RecordBatch) -> dict[str, np.ndarray]:
        """Encode a reader batch: cat [n, n_cat] int32, num [n, n_num] float32, seq_<name>, group, scores.

        Labels are not handled here (see `encode_labels`), because their errors need row numbers.
        """
        n = batch.num_rows
        s = self.schema
        out: dict[str, np.ndarray] = {}
        cats = s.categorical()
        if cats:
            cat = np.empty((n, len(cats)), dtype=np.int32)

            def fill(j: int) -> None:
                name, spec = cats[j]
                cat[:, j] = self._categorical(batch.column(name), name, spec)

            if n >= PARALLEL_ROWS:
                list(pool().map(fill, range(len(cats))))
            else:  # a served request: handing 26 tiny columns to threads costs ms, the work us
                for j in self._categorical_small(batch, cats, cat):
                    fill(j)
            out["cat"] = cat
        nums = s.numeric()
        if nums:
            num = np.empty((n, len(nums)), dtype=np.float32)
            for j, (name, spec) in enumerate(nums):
                num[:, j] = self._numeric(batch.column(name), name, spec)
            out["num"] = num
        for name, spec in s.sequences():
            out[f"seq_{name}"] = self._sequence(batch.column(name), name, spec)
        present = set(batch.schema.names)  # a batch to score carries the model's inputs only
        if s.group and s.group in present:
            out["group"] = hash_strings(pc.fill_null(batch.column(s.group), "")).view(np.int64)
        if s.scores and present.issuperset(s.scores):
            sc = np.empty((n, len(s.scores)), dtype=np.float32)
            for j, name in enumerate(s.scores):
                sc[:, j] = batch.column(name).to_numpy(zero_copy_only=False)
            out["scores"] = sc
        return out

    def _categorical_small(self, batch: pa.RecordBatch, cats: list[tuple[str, FeatureSpec]],
                           cat: np.ndarray) -> list[int]:
        """Fill `cat` for the plain string categoricals of a small batch with ONE fill and hash
        pass over all their values: each per-column Arrow/numpy call costs ~0.1 ms, which for a
        served one-row request is the whole budget. Returns the columns left to `_categorical`."""
        rest, plain = [], []
        for j, (name, spec) in enumerate(cats):
            col = batch.column(name)
            ok = spec.type != "numeric" and isinstance(col, pa.Array) and col.type == pa.string()
            (plain if ok else rest).append(j)
        if len({categorical_fill(cats[j][1]) for j in plain}) != 1:
            return rest + plain
        values = pa.concat_arrays([batch.column(cats[j][0]) for j in plain])
        hashes = hash_strings(pc.fill_null(values, categorical_fill(cats[plain[0]][1])))
        for k, h in zip(plain, hashes.reshape(len(plain), batch.num_rows)):
            cat[:, k] = self.vocabs[cats[k][0]].lookup_hashes(h)
        return rest

    def _categorical(self, col: pa.Array, name: str, spec: FeatureSpec) -> np.ndarray:
        if spec.type == "numeric":  # bucketised numeric
            entry = self.state["features"][name]
            x = _numeric_pre(col, spec, name)
            return (np.searchsorted(np.asarray(entry["edges"]), x, side="right") + FIRST_ID).astype(np.int32)
        if pa.types.is_dictionary(col.type):
            return self.vocabs[name].lookup(col)
        return self.vocabs[name].lookup(pc.fill_null(col, categorical_fill(spec)))

    def _numeric(self, col: pa.Array, name: str, spec: FeatureSpec) -> np.ndarray:
        entry = self.state["features"][name]
        x = _numeric_pre(col, spec, name)
        if "standardize" in spec.transforms:
            x = (x - entry["mean"]) / (entry["std"] if entry["std"] > 0 else 1.0)
        check_float32(x, col, name, spec.transforms)  # stored and scored as float32: inf, then a NaN output
        return x

    def _sequence(self, col: pa.Array, name: str, spec: FeatureSpec) -> np.ndarray:
        """[n, max_len] ids of each row's first max_len non-empty tokens, then padding (0).

        Empty tokens ("a||b", a leading or trailing separator) are dropped, not padded in
        place, so values stay in front and do not lose their slots to holes.
        """
        n = len(col)
        max_len, whitespace = self.sequence_settings(name)
        lists = _split_tokens(col, spec, whitespace)
        offsets = lists.offsets.to_numpy().astype(np.int64)
        row = np.repeat(np.arange(n), np.diff(offsets))
        tokens = pc.list_flatten(lists)
        keep = pc.not_equal(tokens, "").to_numpy(zero_copy_only=False)
        tokens, row = tokens.filter(pa.array(keep)), row[keep]
        out = np.zeros((n, max_len), dtype=np.int32)
        if len(tokens):
            pos = np.arange(row.size) - np.searchsorted(row, row)  # rank of each token inside its row
            fit = pos < max_len
            out[row[fit], pos[fit]] = self.vocabs[name].lookup(tokens)[fit]
        return out

    def encode_labels(self, col: pa.Array) -> tuple[np.ndarray, np.ndarray]:
        """(labels, index of bad rows): float32 0/1 for binary, int32 class ids for multi-class."""
        if self.schema.task == "binary":
            y = binary_labels(col, self.schema)
            bad = np.flatnonzero(~((y == 0.0) | (y == 1.0)))  # NaN (missing) is bad too
            return y.astype(np.float32), bad
        assert self.class_vocab is not None
        filled = pc.fill_null(col, "\x00missing")
        ids = self.class_vocab.lookup(filled)
        return ids.astype(np.int32), np.flatnonzero(ids < 0)

    # -- persistence -------------------------------------------------------------------
    def save(self, path: str | Path) -> None:
        from mtkd.data.atomic import atomic_write_text

        atomic_write_text(Path(path), json.dumps(self.state, separators=(",", ":")))

    @classmethod
    def load(cls, path: str | Path, schema: Schema, exported: bool = False) -> "Encoder":
        """`exported`: the encoder and schema were copied side by side by `mtkd export`, so they
        belong together by construction; only their features are compared, not the schema hash,
        and an export keeps loading after an mtkd version that hashes schemas differently."""
        p = Path(path)
        try:
            state = json.loads(p.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise DataError(f"{p}: cannot read the encoder ({exc}); prepare the dataset again") from None
        if exported:
            have = {n: e.get("type") for n, e in state.get("features", {}).items()}
            want = {n: f.type for n, f in schema.specs()}
            if have != want:
                raise DataError(f"{p}: its features {have} do not match the schema beside it {want}; export again")
        elif state.get("schema_hash") != schema.hash():
            raise DataError(f"{p}: encoder was fitted with a different schema; prepare the dataset again")
        return cls(schema, state)
