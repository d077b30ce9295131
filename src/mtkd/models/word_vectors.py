"""Pretrained word vectors (GloVe, word2vec or fastText text files) as the starting rows of a
text field's embedding table (`word_vectors: {sentence: PATH}` in a training config).

Text teachers trained from random embeddings on a few thousand sentences learn little; vectors
fitted on billions of words are the classic fix, and they load from a local file, which an
offline machine has where it cannot download a model. Only the words of the field's vocabulary
are parsed, so a 400k-word file loads in about a second.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from mtkd.errors import ConfigError, DataError

FIRST_ID = 2  # ids 0 (padding) and 1 (OOV) have no word


def read_word_vectors(path: str | Path, words: dict[str, int], dim: int) -> tuple[np.ndarray, np.ndarray]:
    """(ids, vectors [n, dim] float32) of the words of `words` (word -> id) found in a text file of
    `word v1 ... vD` lines; a word2vec header line `COUNT DIM` is skipped. The first occurrence of
    a word wins, as in the files' frequency order."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"word_vectors: {p} does not exist; give a GloVe / word2vec / fastText text file")
    ids: list[int] = []
    rows: list[np.ndarray] = []
    seen: set[str] = set()
    with open(p, encoding="utf-8", errors="replace") as f:
        for line_no, line in enumerate(f, start=1):
            word, _, rest = line.rstrip("\n").partition(" ")
            if line_no == 1 and _is_header(word, rest):
                continue
            if word not in words or word in seen:
                continue
            vec = np.array(rest.split(), dtype=np.float32) if rest else np.zeros(0, np.float32)
            if vec.size != dim:
                raise DataError(f"{p}: line {line_no}: the vector of {word!r} has {vec.size} values, the "
                                f"embedding {dim}; set params.embedding_dim: {vec.size} (or use a file of {dim}-d vectors)")
            seen.add(word)
            ids.append(words[word])
            rows.append(vec)
    vectors = np.stack(rows) if rows else np.zeros((0, dim), np.float32)
    return np.asarray(ids, dtype=np.int64), vectors


def _is_header(word: str, rest: str) -> bool:
    parts = rest.split()
    return word.isdigit() and len(parts) == 1 and parts[0].isdigit()


def field_table(model: nn.Module, field: str) -> tuple[nn.Embedding, int]:
    """The embedding table that holds `field`'s words, and the first row of its ids."""
    emb = getattr(model, "embedding", None)
    names = getattr(emb, "seq_names", None)
    if names is None:
        raise ConfigError(f"word_vectors: model {type(model).__name__} has no field embedding to initialise")
    if field not in names:
        raise ConfigError(f"word_vectors: {field!r} is not a sequence (text) field; the data has {names}")
    t = emb.seq_table[names.index(field)]
    if t >= 0:
        return emb.sequences[t], 0
    return emb.table, int(emb.offsets[-1 - t])


def init_word_vectors(model: nn.Module, encoder_path: Path, vectors: dict[str, str],
                      log: Callable[[str], None] = print) -> dict[str, int]:
    """Copy the vectors of every field's vocabulary words into its table; returns words found per field."""
    state = json.loads(Path(encoder_path).read_text())["features"]
    found: dict[str, int] = {}
    for field, path in vectors.items():
        entry = state.get(field, {})
        vocab = state.get(entry.get("share_embedding", field), {}).get("vocab")
        if vocab is None:
            hashed = "hash_buckets" in state.get(entry.get("share_embedding", field), {})
            raise ConfigError(f"word_vectors: {field!r} is not a field with a vocabulary"
                              + (" (it is hashed into buckets: no word has a row of its own; drop hash_buckets)"
                                 if hashed else ""))
        table, start = field_table(model, field)
        dim = model.embedding.embedding_dim  # type: ignore[union-attr]
        ids, vecs = read_word_vectors(path, {w: i + FIRST_ID for i, w in enumerate(vocab)}, dim)
        with torch.no_grad():
            table.weight[torch.from_numpy(ids) + start, :dim] = torch.from_numpy(vecs).to(table.weight.dtype)
        found[field] = len(ids)
        log(f"word_vectors {field}: {len(ids):,} of {len(vocab):,} words found in {path} "
            f"({100.0 * len(ids) / max(len(vocab), 1):.0f}%); the others keep their random start")
    return found
