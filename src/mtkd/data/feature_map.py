"""What a model needs to know about an encoded dataset, read from its manifest.

Models are built from a FeatureMap (plus hyper-parameters), never from the raw schema,
so that a model only depends on sizes: how many fields, how large each vocabulary is.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class CategoricalField:
    """One column of `Batch.cat`. Ids: 0 = padding (unused), 1 = out-of-vocabulary, 2.. = values."""

    name: str
    vocab_size: int  # number of ids, padding and OOV included
    share: str | None = None  # the field whose vocabulary and embedding rows this one uses


@dataclass(frozen=True)
class SequenceField:
    """One multi-valued feature, `Batch.seq[name]` of shape [batch, max_len]; id 0 = padding."""

    name: str
    vocab_size: int
    max_len: int
    share: str | None = None  # the sequence field whose vocabulary and embedding table this one uses


@dataclass(frozen=True)
class FeatureMap:
    """Fields in the order the loader yields them.

    `categorical` columns (bucketised numerics included) are `Batch.cat[:, i]`;
    `numeric` columns are `Batch.num[:, j]` (already transformed, float32);
    `sequences` are `Batch.seq[name]`.
    """

    categorical: tuple[CategoricalField, ...] = ()
    numeric: tuple[str, ...] = ()
    sequences: tuple[SequenceField, ...] = ()
    task: str = "binary"  # "binary" or "multiclass"
    num_classes: int = 2
    scores: tuple[str, ...] = ()  # score columns (teachers trained elsewhere)

    @property
    def num_fields(self) -> int:
        """Fields a CTR model embeds: one per categorical, numeric and sequence feature."""
        return len(self.categorical) + len(self.numeric) + len(self.sequences)

    @property
    def output_dim(self) -> int:
        """Logits per row: 1 for binary tasks, one per class for multi-class tasks."""
        return 1 if self.task == "binary" else self.num_classes

    @property
    def total_vocab(self) -> int:
        """Embedding rows in all: a shared vocabulary counts once."""
        return sum(f.vocab_size for f in (*self.categorical, *self.sequences) if f.share is None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "categorical": [_shared({"name": f.name, "vocab_size": f.vocab_size}, f.share)
                            for f in self.categorical],
            "numeric": list(self.numeric),
            "sequences": [_shared({"name": s.name, "vocab_size": s.vocab_size, "max_len": s.max_len}, s.share)
                          for s in self.sequences],
            "task": self.task,
            "num_classes": self.num_classes,
            "scores": list(self.scores),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "FeatureMap":
        return cls(
            categorical=tuple(CategoricalField(**f) for f in d.get("categorical", [])),
            numeric=tuple(d.get("numeric", [])),
            sequences=tuple(SequenceField(**s) for s in d.get("sequences", [])),
            task=d.get("task", "binary"),
            num_classes=int(d.get("num_classes", 2)),
            scores=tuple(d.get("scores", [])),
        )


def _shared(d: dict[str, Any], share: str | None) -> dict[str, Any]:
    """A field's manifest entry; `share` only where set, so manifests of unshared data stay as they were."""
    return d if share is None else {**d, "share": share}
