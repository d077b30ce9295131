"""Encoded dataset on disk: one directory, `.npy` arrays per split, `manifest.json`.

Arrays are written in streaming appends (the `.npy` header is reserved up front and
rewritten with the final shape), so preparing never holds a split in memory, and they
are read back as memory maps, so training on data larger than memory works.
"""

from __future__ import annotations

import ast
import hashlib
import json
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mtkd.data.feature_map import FeatureMap
from mtkd.errors import DataError

MANIFEST = "manifest.json"
ENCODER = "encoder.json"
SCHEMA = "schema.yaml"
STORE_VERSION = 1
_HEADER_LEN = 128  # bytes, magic included: plenty for any shape, and 64-byte aligned
SPLITS = ("train", "valid", "test")


def _npy_header(dtype: np.dtype, shape: tuple[int, ...]) -> bytes:
    d = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": shape}
    body = repr(d).encode("latin1")
    room = _HEADER_LEN - 10 - 1
    if len(body) > room:
        raise ValueError(f"shape {shape} does not fit the reserved .npy header")
    body = body + b" " * (room - len(body)) + b"\n"
    return b"\x93NUMPY" + bytes([1, 0]) + struct.pack("<H", len(body)) + body


class ArrayWriter:
    """Appends row blocks to a `.npy` file and checksums them on the way."""

    def __init__(self, path: Path, dtype: np.dtype, row_shape: tuple[int, ...]):
        self.path = path
        self.dtype = np.dtype(dtype)
        self.row_shape = tuple(row_shape)
        self.rows = 0
        self.hash = hashlib.sha256()  # SHA-NI: ~1.7 GB/s, twice blake2b here
        self.f = open(path, "wb")
        self.f.write(_npy_header(self.dtype, (0, *self.row_shape)))

    def append(self, block: np.ndarray) -> None:
        block = np.ascontiguousarray(block, dtype=self.dtype)
        if block.shape[1:] != self.row_shape:
            raise ValueError(f"{self.path.name}: block shape {block.shape} != (*, {self.row_shape})")
        if block.shape[0] == 0:  # a block may hold no row of this split; memoryview refuses empty shapes
            return
        data = memoryview(block).cast("B")
        self.f.write(data)
        self.hash.update(data)
        self.rows += block.shape[0]

    def close(self) -> dict[str, Any]:
        self.f.seek(0)
        self.f.write(_npy_header(self.dtype, (self.rows, *self.row_shape)))
        self.f.flush()
        self.f.close()
        return {
            "file": self.path.name,
            "dtype": self.dtype.str,
            "shape": [self.rows, *self.row_shape],
            "checksum": self.hash.hexdigest()[:32],
        }


def read_manifest(root: Path) -> dict[str, Any]:
    p = Path(root) / MANIFEST
    if not p.exists():
        raise DataError(f"{root}: not a prepared dataset (no {MANIFEST}); run `mtkd data prepare` first")
    try:
        manifest = json.loads(p.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{p}: corrupt manifest ({exc}); prepare the dataset again") from None
    if not isinstance(manifest, dict):
        raise DataError(f"{p}: corrupt manifest (a JSON {type(manifest).__name__}, not the object mtkd writes); "
                        "prepare the dataset again")
    return manifest


@dataclass
class Split:
    """Memory-mapped arrays of one split."""

    name: str
    rows: int
    arrays: dict[str, np.ndarray]

    def __len__(self) -> int:
        return self.rows


class Dataset:
    """A prepared dataset directory: manifest, feature map, memory-mapped splits."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.manifest = read_manifest(self.root)
        if self.manifest.get("store_version") != STORE_VERSION:
            raise DataError(f"{self.root}: dataset format {self.manifest.get('store_version')} is not "
                            f"{STORE_VERSION}; prepare it again with this version of mtkd")
        self.feature_map = FeatureMap.from_dict(self.manifest["feature_map"])
        self._splits: dict[str, Split] = {}

    @property
    def checksum(self) -> str:
        return self.manifest["checksum"]

    @property
    def split_names(self) -> list[str]:
        return list(self.manifest["splits"])

    def split(self, name: str) -> Split:
        if name not in self._splits:
            info = self.manifest["splits"].get(name)
            if info is None:
                raise DataError(f"{self.root}: no split {name!r}; it has {self.split_names}")
            arrays = {}
            for key, meta in info["arrays"].items():
                path = self.root / name / meta["file"]
                try:
                    arr = np.load(path, mmap_mode="r")
                except (OSError, ValueError, EOFError) as exc:  # missing, truncated, empty, or not an .npy
                    raise DataError(f"{path}: cannot be read ({exc}); the dataset is damaged: prepare it "
                                    "again (`mtkd data prepare ... --force`)") from None
                if list(arr.shape) != meta["shape"]:
                    raise DataError(f"{self.root}/{name}/{meta['file']}: shape {arr.shape} does not match "
                                    f"the manifest {meta['shape']}; prepare the dataset again")
                arrays[key] = arr
            self._splits[name] = Split(name, int(info["rows"]), arrays)
        return self._splits[name]

    def label_frequencies(self, split: str = "train") -> np.ndarray | None:
        """Class frequencies of a split from the manifest ([1 - rate, rate] for binary labels);
        None where the manifest has no counts (an unlabelled split)."""
        info = self.manifest["splits"].get(split, {})
        if info.get("label_rate") is not None:
            return np.array([1.0 - info["label_rate"], info["label_rate"]])
        counts = info.get("class_counts")
        if counts and sum(counts.values()):
            c = np.array(list(counts.values()), dtype=np.float64)
            return c / c.sum()
        return None

    def verify(self) -> list[str]:
        """Recompute every array checksum and the dataset's (which covers encoder.json); returns
        the files that do not match."""
        bad = []
        for name, info in self.manifest["splits"].items():
            for meta in info["arrays"].values():
                try:
                    arr = np.load(self.root / name / meta["file"], mmap_mode="r")
                except (OSError, ValueError, EOFError):  # missing, truncated, empty, or not an .npy
                    bad.append(f"{name}/{meta['file']}")
                    continue
                h = hashlib.sha256()
                step = max(1, (64 << 20) // max(1, arr[:1].nbytes))
                for i in range(0, arr.shape[0], step):
                    h.update(memoryview(np.ascontiguousarray(arr[i : i + step])).cast("B"))
                if h.hexdigest()[:32] != meta["checksum"]:
                    bad.append(f"{name}/{meta['file']}")
        try:  # the dataset checksum covers encoder.json: a swapped vocabulary would score other ids
            encoder_text = (self.root / "encoder.json").read_text()
        except (OSError, UnicodeDecodeError):
            encoder_text = None
        if encoder_text is None or dataset_checksum(self.manifest["splits"], encoder_text) != self.checksum:
            bad.append("encoder.json")
        return bad


def dataset_checksum(splits: dict[str, Any], encoder_text: str) -> str:
    h = hashlib.sha256(encoder_text.encode())
    for name in sorted(splits):
        for key in sorted(splits[name]["arrays"]):
            h.update(f"{name}/{key}:{splits[name]['arrays'][key]['checksum']}".encode())
    return h.hexdigest()[:32]


def parse_shape_from_header(path: Path) -> tuple[int, ...]:
    """Shape stored in a `.npy` header (used by tests of the reserved-header trick)."""
    with open(path, "rb") as f:
        f.read(8)
        (hlen,) = struct.unpack("<H", f.read(2))
        return tuple(ast.literal_eval(f.read(hlen).decode("latin1"))["shape"])
