"""Vectorised 64-bit hashes: of Arrow strings (vocabulary lookup) and of row numbers (splits).

Arrow has no public hash kernel, and a Python dict of a 10M-value vocabulary costs
gigabytes, so vocabularies are sorted uint64 hashes searched with numpy.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_FNV_OFFSET = np.uint64(0xCBF29CE484222325)
_FNV_PRIME = np.uint64(0x100000001B3)


def splitmix64(x: np.ndarray) -> np.ndarray:
    """Bijective 64-bit mixer (SplitMix64 finaliser); uint64 in, uint64 out."""
    z = x.astype(np.uint64, copy=True)
    z ^= z >> np.uint64(30)
    z *= _M1
    z ^= z >> np.uint64(27)
    z *= _M2
    z ^= z >> np.uint64(31)
    return z


def uniform_from_index(index: np.ndarray, seed: int) -> np.ndarray:
    """A uniform [0, 1) number per row that depends only on (seed, row number).

    Splits drawn from it do not depend on how the file was chunked.
    """
    base = splitmix64(np.array([seed & 0xFFFFFFFFFFFFFFFF], dtype=np.uint64))[0]
    z = splitmix64(index.astype(np.uint64) + base)
    return (z >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


def hash_strings(arr: pa.Array) -> np.ndarray:
    """FNV-1a over the UTF-8 bytes of each string, then SplitMix64; nulls hash as ''."""
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if arr.type == pa.large_string():
        off_dtype = np.int64
    else:
        if arr.type != pa.string():
            arr = arr.cast(pa.string())
        off_dtype = np.int32
    n = len(arr)
    if n == 0:
        return np.zeros(0, dtype=np.uint64)
    bufs = arr.buffers()
    offsets = np.frombuffer(bufs[1], dtype=off_dtype)[arr.offset : arr.offset + n + 1].astype(np.int64)
    data = np.frombuffer(bufs[2], dtype=np.uint8) if bufs[2] is not None else np.zeros(1, np.uint8)
    starts = offsets[:-1]
    lengths = offsets[1:] - starts
    h = np.full(n, _FNV_OFFSET, dtype=np.uint64)
    order = np.argsort(-lengths, kind="stable")
    sorted_len = lengths[order]
    max_len = int(sorted_len[0]) if n else 0
    for j in range(max_len):
        k = int(np.searchsorted(-sorted_len, -j, side="left"))  # rows with length > j
        rows = order[:k]
        h[rows] = (h[rows] ^ data[starts[rows] + j].astype(np.uint64)) * _FNV_PRIME
    h ^= lengths.astype(np.uint64)
    return splitmix64(h)


class HashVocab:
    """Maps strings to ids through sorted hashes; unknown strings get `default`."""

    def __init__(self, values: list[str], first_id: int = 2, default: int = 1):
        hashes = hash_strings(pa.array(values, type=pa.string()))
        order = np.argsort(hashes, kind="stable")
        self.keys = hashes[order]
        if self.keys.size > 1 and np.any(self.keys[1:] == self.keys[:-1]):
            raise ValueError("64-bit hash collision inside a vocabulary")
        self.ids = (order + first_id).astype(np.int32)
        self.default = default

    def __len__(self) -> int:
        return int(self.keys.size)

    def lookup_hashes(self, h: np.ndarray) -> np.ndarray:
        if self.keys.size == 0:
            return np.full(h.shape, self.default, dtype=np.int32)
        pos = np.searchsorted(self.keys, h)
        pos = np.minimum(pos, self.keys.size - 1)
        found = self.keys[pos] == h
        return np.where(found, self.ids[pos], self.default).astype(np.int32)

    def lookup(self, arr: pa.Array) -> np.ndarray:
        """Ids of every string in `arr` (hashing each distinct value once)."""
        enc = arr.dictionary_encode() if not pa.types.is_dictionary(arr.type) else arr
        ids = self.lookup_hashes(hash_strings(enc.dictionary))
        idx = enc.indices.to_numpy(zero_copy_only=False)
        return ids[idx]


class HashBuckets:
    """Ids by feature hashing: `first_id + hash(value) % buckets`, with no vocabulary. The same
    interface as HashVocab, so lookup, sharing and serving do not care which a feature uses."""

    def __init__(self, buckets: int, first_id: int = 2):
        if buckets < 1:
            raise ValueError(f"hash_buckets must be >= 1, got {buckets}")
        self.buckets = int(buckets)
        self.first_id = first_id

    def __len__(self) -> int:
        return self.buckets

    def lookup_hashes(self, h: np.ndarray) -> np.ndarray:
        return (h % np.uint64(self.buckets)).astype(np.int32) + np.int32(self.first_id)

    def lookup(self, arr: pa.Array) -> np.ndarray:
        """Ids of every string in `arr` (hashing each distinct value once)."""
        enc = arr.dictionary_encode() if not pa.types.is_dictionary(arr.type) else arr
        ids = self.lookup_hashes(hash_strings(enc.dictionary))
        return ids[enc.indices.to_numpy(zero_copy_only=False)]
