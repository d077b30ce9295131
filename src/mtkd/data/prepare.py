"""`mtkd data prepare`: raw files -> encoded dataset directory, in two streaming passes.

Pass 1 reads the training file, assigns each row to a split, checks labels and fits the
encoder on train rows only. Pass 2 reads every file again, encodes and appends each
block to the split arrays. Everything is built in a hidden `.NAME.partial-PID` directory
and renamed into place at the end, so a failed or interrupted prepare leaves nothing that
later commands would trust.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import yaml

import mtkd
from mtkd.data.atomic import atomic_write_text, replace_dir, sweep_partials
from mtkd.data.encoder import Encoder, EncoderFitter, binary_labels, dictionary_encode
from mtkd.data.value_checks import FLOAT32_MAX, OutOfRange
from mtkd.data.readers import DEFAULT_BLOCK, RawReader, open_reader
from mtkd.data.schema import Schema
from mtkd.data.splits import Source, plan_sources
from mtkd.data.store import ENCODER, MANIFEST, SCHEMA, SPLITS, STORE_VERSION, ArrayWriter, dataset_checksum
from mtkd.errors import DataError, MtkdError


def file_fingerprint(path: Path) -> str:
    """Size, modification time and hashes of the first, middle and last MiB: cheap (a full hash
    of a 10 GB log would dominate prepare), and it changes with any edit, including one of the
    same size between those blocks (`sed -i` flipping labels), which moves the mtime. A copy
    without `cp -p` prepares again once: the safe side."""
    st = path.stat()
    size = st.st_size
    h = hashlib.blake2b(f"{size} {st.st_mtime_ns}".encode(), digest_size=16)
    with open(path, "rb") as f:
        for off in sorted({0, max(0, size // 2 - (1 << 19)), max(0, size - (1 << 20))}):
            f.seek(off)
            h.update(f.read(1 << 20))
    return h.hexdigest()


def _fingerprint(schema: Schema, sources: list[Source]) -> str:
    d = {"schema": schema.hash(), "store": STORE_VERSION,
         "sources": [{"files": [file_fingerprint(p) for p in s.paths], "splits": s.splits, "ratios": s.ratios,
                      "ordered": s.ordered, "seed": s.seed} for s in sources]}
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:32]


def _warn_reused_files(sources: list[Source], log: Callable[[str], None]) -> None:
    """One file given twice (as train and test, or twice in --train) puts the same rows in two
    splits or twice in one: the test score would measure memory, not generalisation."""
    seen: dict[Path, str] = {}
    for s in sources:
        for p in s.paths:
            where = "/".join(s.splits)
            key = p.resolve()
            if key in seen:
                log(f"warning: {p} is given twice (as {seen[key]} and as {where}): its rows are in both; "
                    "a test or validation score on rows the model trained on says nothing of new data")
            seen.setdefault(key, where)


def _check_labels(reader: RawReader, encoder_or_none: Encoder | None, batch: pa.RecordBatch,
                  start: int, schema: Schema) -> None:
    col = batch.column(schema.label)
    if schema.task == "binary":
        y = binary_labels(col, schema)
        bad = np.flatnonzero(~((y == 0.0) | (y == 1.0)))
        what = "missing" if bad.size and np.isnan(y[bad[0]]) else None
    else:
        if encoder_or_none is None:
            bad = np.flatnonzero(col.is_null().to_numpy(zero_copy_only=False))
            what = "missing"
        else:
            _, bad = encoder_or_none.encode_labels(col)
            what = "unseen"
    if bad.size:
        i = int(bad[0])
        value = col[i].as_py()
        line = reader.where(start + i)
        if schema.task == "binary" and schema.label_values:
            hint = f"labels must be one of label_values {schema.label_values}; fix the row or drop it"
        elif schema.task == "binary":
            hint = ("labels must be 0 or 1" + (" (libFM: -1/+1)" if schema.format == "libfm" else "")
                    + "; fix the row or drop it")
        elif what == "unseen":
            hint = "this class never occurs in the training split; add training rows for it or drop the row"
        else:
            hint = "every row needs a label"
        shown = ("missing (empty, or a spelling of missing such as NA or nan)" if what == "missing" or value is None else
                 f"{value:g}" if isinstance(value, float) else repr(value))  # the file's 2, not 2.0
        raise DataError(f"{reader.path}: {line}, column {schema.label!r} (label): {shown}; {hint}. "
                        f"({bad.size} such row(s) in this block)")


def prepare(
    schema: Schema,
    out: str | Path,
    train: str | Path | list[str | Path],
    valid: str | Path | None = None,
    test: str | Path | None = None,
    ratios: list[float] | None = None,
    ordered: bool | None = None,
    seed: int | None = None,
    force: bool = False,
    block_size: int = DEFAULT_BLOCK,
    log: Callable[[str], None] = lambda s: None,
    replace_changed: bool | str = False,
    out_flag: str = "--out",
) -> dict[str, Any]:
    """Encode raw files into `out`. Returns the manifest (also when `out` is already up to date).
    `replace_changed`: a dataset in `out` prepared from other files is prepared again without
    --force (an experiment owns its OUT/data; its runs' dataset checksums decide what is reused);
    "same_data": only when it is this data (same schema; the same raw files, or files of the same
    names and sizes, as two experiments' synthetic copies), as for a `data.dir` shared by several
    experiments. `out_flag`: what names `out` in messages."""
    out = Path(out)
    here = Path.cwd().resolve()
    if out.resolve() == here or out.resolve() in here.parents:
        raise MtkdError(f"--out {out}: is the current directory (or holds it); a prepared dataset replaces "
                        "its --out directory as a whole, so name a new directory, e.g. --out data/NAME")
    trains = [Path(t) for t in (train if isinstance(train, (list, tuple)) else [train])]
    sources = plan_sources(schema, trains, _p(valid), _p(test), ratios, ordered, seed)
    _warn_reused_files(sources, log)
    readers = [[open_reader(p, schema, block_size) for p in s.paths] for s in sources]
    fingerprint = _fingerprint(schema, sources)
    sweep_partials(out.parent, out.name)  # never a prepare still running; a dataset cut off mid-swap returns
    if replace_changed == "same_data":
        replace_changed = _same_data(out, schema, sources)
    existing = _check_out_dir(out, fingerprint, force, bool(replace_changed), log, out_flag)
    if existing is not None:
        log(f"{out}: already prepared from the same files and schema; nothing to do")
        return existing
    tmp = out.parent / f".{out.name}.partial-{os.getpid()}"
    tmp.mkdir(parents=True)
    try:
        t0 = time.perf_counter()
        spool = _Spool(tmp / "spool")
        encoder, counts = _fit(schema, sources[0], readers[0], spool, log)
        t_fit = time.perf_counter() - t0
        splits = _encode(schema, encoder, sources, readers, spool, tmp, log)
        shutil.rmtree(spool.root, ignore_errors=True)
        columns = list(dict.fromkeys(c for rs in readers for r in rs for c in r.file_columns))
        manifest = _manifest(schema, encoder, sources, splits, fingerprint, tmp, columns)
        manifest["timing"] = {"fit_seconds": round(t_fit, 3),
                              "total_seconds": round(time.perf_counter() - t0, 3)}
        atomic_write_text(tmp / MANIFEST, json.dumps(manifest, indent=1))
        if replace_changed and not force:
            _carry_derived(out, tmp, manifest["checksum"], log)
        replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest


def check_finite(reader: RawReader, batch: pa.RecordBatch, start: int, schema: Schema) -> None:
    """Infinite values would turn standardised columns into NaN: refuse them with their line.
    Score columns (teacher outputs kept as float32) too, and past float32's range, where they
    would turn infinite and make the student's KD loss NaN."""
    present = set(batch.schema.names)
    numeric = [name for name, spec in schema.specs() if spec.type == "numeric"]
    for name in numeric + [n for n in schema.scores if n in present]:
        x = batch.column(name).to_numpy(zero_copy_only=False)
        score = name not in numeric
        bad = np.flatnonzero(np.isinf(x) | (np.abs(np.nan_to_num(x)) > FLOAT32_MAX) if score else np.isinf(x))
        if bad.size:
            i = int(bad[0])
            what = (f"{x[i]:g} is past float32's range (3.4e38), in which teacher scores are kept" if score and
                    np.isfinite(x[i]) else "the value is infinite (inf, or a number past float64's 1.8e308 such "
                    "as 1e400), not a finite number")
            fix = ("fix the teacher's output there, or leave it empty (a teacher needs every row: drop the row)"
                   if score else "fix the value or leave the field empty (missing values get fill_na)")
            raise DataError(f"{reader.path}: {reader.where(start + i)}, column {name!r}: {what}; {fix}")


def _p(x: str | Path | None) -> Path | None:
    return None if x is None else Path(x)


def _same_data(out: Path, schema: Schema, sources: list[Source]) -> bool:
    """Whether `out` holds a dataset of this schema from these raw files (edited or touched), or
    from files of the same names and sizes elsewhere (a copy, another experiment's synthetic rows)."""
    try:
        manifest = json.loads((out / MANIFEST).read_text())
        inputs = manifest["inputs"]
        if manifest.get("schema_hash") != schema.hash() or len(inputs) != len(sources):
            return False
        had = [(sorted(str(Path(f).resolve()) for f in i["files"]), sorted(Path(f).name for f in i["files"]),
                int(i["bytes"])) for i in inputs]
    except (OSError, ValueError, KeyError, TypeError):
        return False
    now = [(sorted(str(p.resolve()) for p in s.paths), sorted(p.name for p in s.paths),
            sum(p.stat().st_size for p in s.paths)) for s in sources]
    return all(h[0] == n[0] or h[1:] == n[1:] for h, n in zip(had, now))


def _check_out_dir(out: Path, fingerprint: str, force: bool, replace_changed: bool = False,
                   log: Callable[[str], None] = lambda s: None, out_flag: str = "--out") -> dict[str, Any] | None:
    if not out.exists():
        return None
    if not out.is_dir():
        raise MtkdError(f"{out}: exists and is not a directory; choose another {out_flag}")
    man = out / MANIFEST
    if man.exists():
        try:
            manifest = json.loads(man.read_text())
        except json.JSONDecodeError:
            manifest = {}
        if manifest.get("fingerprint") == fingerprint and not force:
            return manifest
        if replace_changed and manifest and not force:
            log(f"{out}: its raw files or schema changed since it was prepared (or were touched or copied): "
                "preparing it again; runs are reused where the prepared data comes out the same")
        elif not force:
            raise MtkdError(
                f"{out}: already holds a different dataset ({manifest.get('name', '?')}, prepared from other "
                f"files, schema or split); choose another {out_flag}, or pass --force to replace it"
            )
    elif any(out.iterdir()) and not force:
        raise MtkdError(f"{out}: directory is not empty and is not an mtkd dataset; choose another {out_flag} "
                        "or pass --force to replace it")
    return None


def _carry_derived(out: Path, tmp: Path, checksum: str, log: Callable[[str], None]) -> None:
    """Prepared again with the same result (a touched or copied raw file): what was derived
    from the old data (cached teacher outputs, keyed by the checksum) moves into the new one,
    rather than teachers being scored again."""
    try:
        old = json.loads((out / MANIFEST).read_text())
    except (OSError, json.JSONDecodeError):
        return
    if old.get("checksum") != checksum:
        return
    kept = [e for e in out.iterdir() if not (tmp / e.name).exists()]
    for e in kept:
        os.replace(e, tmp / e.name)
    log(f"{out}: the prepared data came out the same (checksum {checksum[:12]})"
        + (f"; kept {', '.join(e.name for e in kept)}" if kept else ""))


def _blocks(readers: list[RawReader]):
    """(reader, block, row number in its file, row number across the source's files)."""
    start = 0
    for reader in readers:
        local = 0
        for batch in reader.batches():
            yield reader, batch, local, start
            local += batch.num_rows
            start += batch.num_rows


class _Spool:
    """Blocks of the training file as parsed and dictionary-encoded in pass 1, kept on disk
    (Arrow IPC, one file per block) so pass 2 does not parse the text again."""

    def __init__(self, root: Path):
        self.root = root
        self.entries: list[tuple[Path, RawReader, int, int]] = []

    def put(self, batch: pa.RecordBatch, reader: RawReader, local: int, start: int) -> None:
        self.root.mkdir(exist_ok=True)
        path = self.root / f"{len(self.entries):06d}.arrow"
        with pa.OSFile(str(path), "wb") as f, pa.ipc.new_stream(f, batch.schema) as w:
            w.write_batch(batch)
        self.entries.append((path, reader, local, start))

    def blocks(self):
        for path, reader, local, start in self.entries:
            with pa.OSFile(str(path)) as f:
                batch = pa.ipc.open_stream(f).read_next_batch()
            path.unlink()
            yield reader, batch, local, start


def _fit(schema: Schema, source: Source, readers: list[RawReader], spool: _Spool,
         log) -> tuple[Encoder, list[int]]:
    total = sum(r.count_rows() for r in readers) if source.ordered and len(source.splits) > 1 else None
    fitter = EncoderFitter(schema)
    counts = [0] * len(source.splits)
    seen = 0
    for reader, batch, local, start in _blocks(readers):
        n = batch.num_rows
        _check_labels(reader, None, batch, local, schema)
        check_finite(reader, batch, local, schema)
        part = source.assign(start, n, total)
        counts = [c + int(k) for c, k in zip(counts, np.bincount(part, minlength=len(counts)))]
        mask = part == 0
        rows = np.arange(start, start + n, dtype=np.int64)
        batch = dictionary_encode(batch, schema)
        if mask.any():
            fitter.add(batch, rows, mask)
        spool.put(batch, reader, local, start)
        seen = start + n
    names = ", ".join(p.name for p in source.paths)
    if counts[0] == 0:
        raise DataError(f"{names}: the training split is empty ({seen} rows, ratios {source.ratios})")
    log(f"fitted encoder on {counts[0]:,} training rows of {names}")
    source.total = total  # type: ignore[attr-defined]
    try:
        return fitter.finish(), counts
    except DataError as e:  # statistics that overflow: the training files they come from
        raise DataError(f"{', '.join(map(str, source.paths))}: {e}") from None


def _encode(schema: Schema, encoder: Encoder, sources: list[Source], readers: list[list[RawReader]],
            spool: _Spool, tmp: Path, log) -> dict[str, dict[str, Any]]:
    writers: dict[str, dict[str, ArrayWriter]] = {}
    label_sums: dict[str, np.ndarray] = {}
    for src, src_readers in zip(sources, readers):
        total = getattr(src, "total", None)
        start = 0
        blocks = spool.blocks() if src is sources[0] else _blocks(src_readers)
        for reader, batch, local, start in blocks:
            n = batch.num_rows
            if src is not sources[0] or schema.task == "multiclass":
                _check_labels(reader, encoder, batch, local, schema)
            if src is not sources[0]:
                check_finite(reader, batch, local, schema)
            try:
                arrays = encoder.transform(batch)
            except OutOfRange as e:  # past float32 once transformed: named by its line
                raise e.at(reader, local) from None
            arrays["label"], _ = encoder.encode_labels(batch.column(schema.label))
            part = src.assign(start, n, total)
            for k, split in enumerate(src.splits):
                sel = part == k if len(src.splits) > 1 else slice(None)
                w = writers.setdefault(split, {})
                for key, arr in arrays.items():
                    block = arr[sel]
                    if key not in w:
                        (tmp / split).mkdir(exist_ok=True)
                        w[key] = ArrayWriter(tmp / split / f"{key}.npy", block.dtype, block.shape[1:])
                    w[key].append(block)
                y = arrays["label"][sel]
                ls = label_sums.setdefault(split, np.zeros(max(2, len(encoder.classes)), dtype=np.int64))
                ls += np.bincount(y.astype(np.int64), minlength=ls.size)[: ls.size]
            start += n
        log(f"encoded {start:,} rows of {', '.join(p.name for p in src.paths)} -> {', '.join(src.splits)}")
    splits: dict[str, dict[str, Any]] = {}
    for split in SPLITS:
        if split not in writers:
            continue
        metas = {key: w.close() for key, w in writers[split].items()}
        rows = metas["label"]["shape"][0]
        if rows == 0:
            src = next(s for s in sources if split in s.splits)
            shares = ", ".join(f"{n} {r:g}" for n, r in zip(src.splits, src.ratios))
            raise DataError(f"{', '.join(p.name for p in src.paths)}: the {split} split got none of the "
                            f"{sum(int(w['label'].rows) for w in writers.values())} rows ({shares}); "
                            f"give more rows, a larger {split} ratio (--split), or the {split} rows as "
                            f"a file (--{split} FILE)")
        info: dict[str, Any] = {"rows": rows, "arrays": metas}
        counts = label_sums[split]
        if schema.task == "binary":
            info["label_rate"] = round(float(counts[1]) / rows, 6) if rows else None
        else:
            info["class_counts"] = {c: int(k) for c, k in zip(encoder.classes, counts)}
        splits[split] = info
    return splits


def _manifest(schema: Schema, encoder: Encoder, sources: list[Source], splits: dict[str, Any],
              fingerprint: str, tmp: Path, source_columns: list[str]) -> dict[str, Any]:
    encoder.save(tmp / ENCODER)
    atomic_write_text(tmp / SCHEMA, yaml.safe_dump(schema.model_dump(mode="json"), sort_keys=False))
    fmap = encoder.feature_map()
    return {
        "store_version": STORE_VERSION,
        "mtkd_version": mtkd.__version__,
        "name": schema.name,
        "task": schema.task,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "schema_hash": schema.hash(),
        "fingerprint": fingerprint,
        "checksum": dataset_checksum(splits, (tmp / ENCODER).read_text()),
        "inputs": [{"files": [str(p) for p in s.paths], "bytes": sum(p.stat().st_size for p in s.paths),
                    "splits": s.splits,
                    "ratios": s.ratios, "ordered": s.ordered, "seed": s.seed} for s in sources],
        "source_columns": source_columns,  # the raw files' columns, used or not (serving accepts them)
        "feature_map": fmap.to_dict(),
        "vocab_sizes": {f.name: f.vocab_size for f in fmap.categorical}
        | {s.name: s.vocab_size for s in fmap.sequences},
        "splits": splits,
    }
