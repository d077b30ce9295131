"""Pretrained word vectors (GloVe, word2vec or fastText text files) as the starting rows of a
text field's embedding table (`word_vectors: {sentence: PATH}` in a training config).

Text teachers trained from random embeddings on a few thousand sentences learn little; vectors
fitted on billions of words are the classic fix, and they load from a local file, which an
offline machine has where it cannot download a model. Only the words of the field's vocabulary
are parsed, so a 400k-word file loads in about a second.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from mtkd.data.file_hints import COMPRESSED, decompress_hint
from mtkd.errors import ConfigError, DataError

FIRST_ID = 2  # ids 0 (padding) and 1 (OOV) have no word


def read_word_vectors(path: str | Path, words: dict[str, int], dim: int) -> tuple[np.ndarray, np.ndarray]:
    """(ids, vectors [n, dim] float32) of the words of `words` (word -> id) found in a text file of
    `word v1 ... vD` lines; a word2vec header line `COUNT DIM` is skipped. The last `dim` fields
    are the vector and the rest the word, as glove.840B has words with spaces (". . ."); fields
    split on spaces or tabs. The first occurrence of a word wins, as in the files' frequency
    order. Only the lines of vocabulary words are parsed (and checked), for speed."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"word_vectors: {p} does not exist; give a GloVe / word2vec / fastText text file")
    _refuse_binary(p)
    ids: list[int] = []
    rows: list[np.ndarray] = []
    seen: set[str] = set()
    first = True
    spaced = any(" " in w for w in words)  # words with spaces (a `separator: ","` field) need every line split
    with open(p, encoding="utf-8", errors="replace") as f:
        for line_no, line in enumerate(f, start=1):
            s = line.rstrip(" \t\r\n")
            if not s:
                continue
            if first:
                first = False
                if _check_first(p, line_no, s, dim):
                    continue  # the word2vec header
            if spaced and (s.count(" ") != dim or "\t" in s):
                word, fields = _split(p, line_no, s, dim, words)
            else:  # the common line: a word then its vector; the word alone decides, for speed
                i, t = s.find(" "), s.find("\t")
                i = t if t >= 0 and (i < 0 or t < i) else i
                word = s[:i] if i > 0 else s
                if word not in words:
                    continue  # a spaced word starting with it is not in the vocabulary either
                fields = s[i + 1:].split() if i > 0 else []
                if len(fields) != dim:
                    word, fields = _split(p, line_no, s, dim, words)
            if word not in words or word in seen:
                continue
            if len(fields) != dim:
                raise DataError(f"{p}: line {line_no}: the vector of {word!r} has {len(fields)} values, "
                                f"not {dim} as the first line; the line is damaged or cut short: fix or delete it")
            try:
                vec = np.array(fields, dtype=np.float32)
            except ValueError:
                j, bad = next((j, x) for j, x in enumerate(fields, 1) if not _is_number(x))
                raise DataError(f"{p}: line {line_no}: value {j} of {word!r} is {bad!r}, not a number; "
                                f"fix or delete the line (each line is a word and {dim} numbers)") from None
            seen.add(word)
            ids.append(words[word])
            rows.append(vec)
    vectors = np.stack(rows) if rows else np.zeros((0, dim), np.float32)
    return np.asarray(ids, dtype=np.int64), vectors


_WS = re.compile(r"[ \t]+")
_ZIP = ((b"PK\x03\x04", "zip", ".zip"),)


def _is_number(x: str) -> bool:
    try:
        float(x)
        return True
    except ValueError:
        return False


def _is_header(parts: list[str]) -> bool:
    return len(parts) == 2 and parts[0].isdigit() and parts[1].isdigit()


def _check_first(p: Path, line_no: int, s: str, dim: int) -> bool:
    """True for a word2vec header; a file of vectors of another size is refused here, on its
    first line, whatever its words (else it would only show as 0 words found)."""
    parts = _WS.split(s)
    if _is_header(parts):
        n, word = int(parts[1]), None
    else:
        n, word = len(parts) - 1, parts[0]  # a longer line is a spaced word if the field before the vector is no number
        if n == dim or (n > dim and not _is_number(parts[-dim - 1])):
            return False
    if n == 0:
        raise DataError(f"{p}: line {line_no}: {s[:40]!r} has no vector; each line is a word and {dim} numbers")
    if n != dim:
        what = f"the vector of {word!r} has" if word is not None else "the header line says"
        raise DataError(f"{p}: line {line_no}: {what} {n} values, the embedding {dim}; "
                        f"set params.embedding_dim: {n} (or use a file of {dim}-d vectors)")
    return True


def _split(p: Path, line_no: int, s: str, dim: int, words: dict[str, int]) -> tuple[str, list[str]]:
    """(word, vector fields) of a line with tabs, a spaced word or a wrong count; a vocabulary
    word followed by more than `dim` numbers is refused rather than read as a spaced word."""
    parts = _WS.split(s)
    if len(parts) <= dim:
        return parts[0], parts[1:]
    word = " ".join(parts[:-dim])
    if word not in words and parts[0] in words and all(_is_number(x) for x in parts[1:-dim]):
        raise DataError(f"{p}: line {line_no}: the vector of {parts[0]!r} has {len(parts) - 1} values, "
                        f"not {dim} as the first line; the line is damaged: fix or delete it")
    return word, parts[-dim:]


def _refuse_binary(p: Path) -> None:
    """Compressed or binary files read as text give garbage or silently 0 words: name the fix."""
    with open(p, "rb") as f:
        head = f.read(4096)
    if not head:
        raise DataError(f"{p}: file is empty (0 bytes); give a GloVe / word2vec / fastText text file")
    for sig, kind, suffix in (*COMPRESSED, *_ZIP):
        if head.startswith(sig):
            raise DataError(f"{p}: is {kind}-compressed; decompress it first (`{decompress_hint(p, kind, suffix)}`) and give "
                            f"word_vectors the text file it holds")
    top, _, body = head.partition(b"\n")
    w2v = _is_header(top.decode("latin-1").split())
    if b"\0" in head or (w2v and not _decodes(body)):
        convert = (f"python -c \"from gensim.models import KeyedVectors as K; K.load_word2vec_format('{p}', "
                   f"binary=True).save_word2vec_format('{p}.txt', binary=False)\" and give {p}.txt")
        raise DataError(f"{p}: is a word2vec binary file; convert it to text first: {convert}" if w2v else
                        f"{p}: is not a text file (it has NUL bytes); give a text file of `WORD v1 ... vD` "
                        f"lines (a word2vec .bin converts with gensim: {convert})")


def _decodes(data: bytes) -> bool:
    for cut in range(4):  # the block may end inside a character
        try:
            data[:len(data) - cut].decode("utf-8")
            return True
        except UnicodeDecodeError:
            pass
    return False


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
        if not len(ids) and vocab:
            raise DataError(_none_found(field, path, vocab, dim))
        with torch.no_grad():
            table.weight[torch.from_numpy(ids) + start, :dim] = torch.from_numpy(vecs).to(table.weight.dtype)
        found[field] = len(ids)
        log(f"word_vectors {field}: {len(ids):,} of {len(vocab):,} words found in {path} "
            f"({100.0 * len(ids) / max(len(vocab), 1):.0f}%); the others keep their random start")
    return found


def _none_found(field: str, path: str, vocab: list[str], dim: int) -> str:
    """Training on would silently drop the vectors: show what the file and the vocabulary hold,
    and whether lower-casing matches (GloVe's words are lower-case)."""
    with open(path, encoding="utf-8", errors="replace") as f:
        heads = [line.split()[0] for line, _ in zip(f, range(6)) if line.strip()]
    msg = (f"word_vectors {field}: none of the {len(vocab):,} words of its vocabulary (e.g. {vocab[:4]}) "
           f"is in {path} (its first words: {heads}); ")
    if any(w != w.lower() for w in vocab):
        n = len(read_word_vectors(path, {w.lower(): 0 for w in vocab}, dim)[0])
        if n:
            return msg + (f"{n:,} are once lower-cased: the vectors are lower-case (as GloVe's), so set "
                          f"`lowercase: true` on the text feature in the schema and prepare the data again")
    return msg + (f"check the file is text lines `WORD v1 ... v{dim}` of the same language and tokenisation, "
                  f"and its case (for lower-case vectors such as GloVe's, set `lowercase: true` on the text "
                  f"feature in the schema and prepare the data again)")
