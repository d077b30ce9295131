"""Dataset schema (YAML): which columns are features, of what type, and how to encode them.

Vocabulary follows FuxiCTR (`min_count`, `fill_na`); unknown keys are errors because a
misspelt key silently changing results is the worst kind of bug in an experiment.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Literal, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from mtkd.config_io import load_model, parse_model
from mtkd.errors import ConfigError

HASH_VERSION = 2  # of Schema.hash: bump when a default that changes encoded arrays changes

Transform = Literal["none", "log", "standardize", "bucketize"]
Format = Literal["csv", "tsv", "parquet", "libfm"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FeatureSpec(_Strict):
    """One feature, or several with the same settings (`names: [...]`)."""

    name: str | None = None
    names: list[str] | None = None
    type: Literal["categorical", "numeric", "sequence"]
    min_count: int = Field(1, ge=1, description="values seen fewer times in train map to OOV")
    fill_na: Union[str, float, None] = None
    transform: Union[Transform, list[Transform]] = "none"
    bins: int = Field(10, ge=2, le=100000, description="quantile bins for transform: bucketize")
    separator: str = "|"
    max_len: int = Field(10, ge=1, description="sequence: tokens kept; a sharer of a sequence's embedding "
                                               "defaults to its owner's")
    lowercase: bool = Field(False, description="sequence: lower-case the text before splitting it")
    split_punctuation: bool = Field(False, description="sequence: punctuation marks become tokens of their own")
    share_embedding: str | None = Field(
        None, description="use another feature's vocabulary and embedding table (fitted on both columns)")
    hash_buckets: int | None = Field(
        None, ge=1, description="ids by hashing values into this many buckets: no vocabulary is fitted, and "
                                "a value never seen in training gets a bucket (shared by collision) instead of OOV")

    @model_validator(mode="after")
    def _check(self) -> "FeatureSpec":
        if (self.name is None) == (self.names is None):
            raise ValueError("give exactly one of `name` or `names`")
        if self.names is not None and not self.names:
            raise ValueError("`names` is empty")
        ts = self.transforms
        if self.type != "numeric" and ts != ["none"]:
            raise ValueError(f"transform {ts} applies to numeric features only")
        if "bucketize" in ts and ts[-1] != "bucketize":
            raise ValueError("bucketize must be the last transform")
        if len(ts) > 1 and "none" in ts:
            raise ValueError("`none` cannot be combined with other transforms")
        if self.type == "sequence" and not self.separator:
            raise ValueError(f"feature {', '.join(map(repr, self.all_names))}: separator is empty; give the "
                             'character(s) between tokens, e.g. separator: " " for text or "|" for lists')
        if self.type != "sequence" and (self.lowercase or self.split_punctuation):
            raise ValueError("lowercase and split_punctuation apply to sequence (text) features only")
        if self.type == "numeric" and self.fill_na is not None:
            try:
                fill = float(self.fill_na)
            except ValueError:
                raise ValueError(f"fill_na {self.fill_na!r}: a numeric feature's missing values need a number "
                                 "(e.g. fill_na: 0)") from None
            if not math.isfinite(fill):  # nan / inf would turn the whole column into NaN once standardised
                raise ValueError(f"fill_na {self.fill_na!r}: a numeric feature's missing values need a finite "
                                 "number (e.g. fill_na: 0)")
        if self.share_embedding is not None and self.type == "numeric":
            raise ValueError("share_embedding applies to categorical and sequence features")
        if self.hash_buckets is not None:
            if self.type == "numeric":
                raise ValueError("hash_buckets applies to categorical and sequence features")
            if self.min_count != 1:
                raise ValueError("min_count needs a vocabulary; hash_buckets has none (drop one of them)")
            if self.share_embedding is not None:
                raise ValueError("a feature with share_embedding uses its owner's ids; set hash_buckets on the owner")
        return self

    @property
    def transforms(self) -> list[str]:
        return list(self.transform) if isinstance(self.transform, list) else [self.transform]

    @property
    def all_names(self) -> list[str]:
        return [self.name] if self.name is not None else list(self.names or [])


class SplitSpec(_Strict):
    """Default split of the train file when `--split` is not given on the command line."""

    ratios: list[float] = Field(default_factory=lambda: [0.8, 0.1, 0.1])
    seed: int = 2026
    ordered: bool = False


class Schema(_Strict):
    """A dataset: file format, label, features, optional group and score columns."""

    name: str = "dataset"
    task: Literal["binary", "multiclass"] = "binary"
    format: Format = "csv"
    header: bool = True
    delimiter: str | None = None
    columns: list[str] | None = Field(
        None, description="column names in file order: for files without a header, or to rename a header's")
    quoting: bool = Field(True, description='csv/tsv: a field that starts with " is quoted; false reads quotes as text')
    label: str = "label"
    label_values: list[str] | None = Field(
        None, description="binary task with text labels: [negative, positive], e.g. [not_entailment, entailment]")
    group: str | None = None
    scores: list[str] = Field(default_factory=list)
    features: list[FeatureSpec]
    split: SplitSpec = Field(default_factory=SplitSpec)

    @field_validator("label_values", mode="before")
    @classmethod
    def _quoted(cls, v):
        if isinstance(v, list) and any(isinstance(x, bool) for x in v):
            raise ValueError("YAML reads yes/no, true/false and on/off as booleans: quote the labels as "
                             "they appear in the file, e.g. label_values: ['no', 'yes']")
        return v

    @field_validator("features")
    @classmethod
    def _nonempty(cls, v: list[FeatureSpec]) -> list[FeatureSpec]:
        if not v:
            raise ValueError("at least one feature is required")
        return v

    @model_validator(mode="after")
    def _check(self) -> "Schema":
        names = [n for f in self.features for n in f.all_names]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"features named more than once: {dup}")
        used = names + [self.label] + ([self.group] if self.group else []) + list(self.scores)
        if self.label in names:
            raise ValueError(f"label column {self.label!r} is also listed as a feature")
        roles = [("feature", n) for n in names] + [("label", self.label)] + \
            ([("group", self.group)] if self.group else []) + [("score", n) for n in self.scores]
        for i, (role, col) in enumerate(roles):
            other = next((r for r, c in roles[:i] if c == col), None)
            if other is not None:  # one column read twice would be one Arrow field named twice
                raise ValueError(f"{role} column {col!r} is listed twice" if other == role else
                                 f"column {col!r} is both the {other} and a {role} column; each column has "
                                 "one role (drop it from one of them)")
        if self.delimiter is not None and len(self.delimiter) != 1:
            raise ValueError(f"delimiter {self.delimiter!r}: must be one character (e.g. \",\", \"\\t\", \";\"); "
                             "a file separated by several characters needs converting first")
        self._check_shared()
        if self.label_values is not None and (self.task != "binary" or len(set(self.label_values)) != 2):
            raise ValueError("label_values lists the two labels of a binary task: [negative, positive]")
        if self.format in ("csv", "tsv") and not self.header and not self.columns:
            raise ValueError("header: false needs `columns:` (the column names in file order)")
        if self.format == "libfm":
            if not self.columns:
                raise ValueError("format libfm needs `columns:` naming the fields in the order they appear")
            if self.group or self.scores:
                raise ValueError("format libfm has no group or score columns")
        if self.columns is not None:
            if twice := sorted({c for c in self.columns if self.columns.count(c) > 1}):
                raise ValueError(f"`columns:` names {twice} more than once; give each column of the file its own name")
            if self.format == "libfm":
                missing = [n for n in used if n not in self.columns and n != self.label]
            else:
                missing = [n for n in used if n not in self.columns]
            if missing:
                raise ValueError(f"columns used but not listed in `columns`: {missing}")
        return self

    def _check_shared(self) -> None:
        spec = dict(self.specs())
        for name, f in spec.items():
            owner = f.share_embedding
            if owner is None:
                continue
            if owner not in spec or owner == name:
                raise ValueError(f"feature {name!r}: share_embedding names {owner!r}, which is not another feature")
            o = spec[owner]
            if o.share_embedding is not None:
                raise ValueError(f"feature {name!r}: share_embedding must name the table's owner; "
                                 f"{owner!r} itself shares {o.share_embedding!r}")
            if o.type != f.type and not (f.type == "sequence" and o.type == "categorical"):
                raise ValueError(f"feature {name!r} ({f.type}) cannot share the embedding of {owner!r} ({o.type}): "
                                 "share between features of one type, or let a sequence share a categorical "
                                 "feature's (a history of items and the item)")
            if f.type == o.type == "sequence" and "max_len" not in f.model_fields_set:
                f.max_len = o.max_len  # hashed as if written: the hash moves only where it is not 10
            if f.min_count not in (1, o.min_count):
                raise ValueError(f"feature {name!r}: a shared vocabulary has its owner's min_count "
                                 f"({owner!r}: {o.min_count}); drop min_count here")

    def vocab_owner(self, name: str) -> str:
        """The feature whose vocabulary (and embedding table) `name` uses: itself unless shared."""
        return dict(self.specs())[name].share_embedding or name

    # -- derived views ---------------------------------------------------------------
    def specs(self) -> list[tuple[str, FeatureSpec]]:
        """(column name, spec) for every feature, in schema order."""
        return [(n, f) for f in self.features for n in f.all_names]

    def categorical(self) -> list[tuple[str, FeatureSpec]]:
        """Features stored as ids in `cat`: categorical ones and bucketised numerics."""
        return [
            (n, f) for n, f in self.specs()
            if f.type == "categorical" or (f.type == "numeric" and f.transforms[-1] == "bucketize")
        ]

    def numeric(self) -> list[tuple[str, FeatureSpec]]:
        return [(n, f) for n, f in self.specs() if f.type == "numeric" and f.transforms[-1] != "bucketize"]

    def sequences(self) -> list[tuple[str, FeatureSpec]]:
        return [(n, f) for n, f in self.specs() if f.type == "sequence"]

    def input_columns(self) -> list[str]:
        """Columns the readers must deliver."""
        cols = [self.label] + [n for n, _ in self.specs()]
        if self.group:
            cols.append(self.group)
        return cols + list(self.scores)

    def hash(self) -> str:
        """Hash of everything that changes the encoded arrays (not the name). Settings left at
        their defaults are not part of it, so a version that adds a setting does not make
        every dataset prepared before it look different; HASH_VERSION changes when a default does."""
        d = self.model_dump(mode="json", exclude_defaults=True)
        d.pop("name", None)
        d["hash_version"] = HASH_VERSION
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


def load_schema(path: str | Path) -> Schema:
    schema = load_model(Schema, path)
    return schema


def schema_from_dict(data: dict, source: str = "<schema>") -> Schema:
    return parse_model(Schema, data, source)


__all__ = ["FeatureSpec", "Schema", "SplitSpec", "load_schema", "schema_from_dict", "ConfigError"]
