"""`mtkd data`: make synthetic data, prepare raw files into a dataset directory, inspect one."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from mtkd.errors import DataError, MtkdError

data_app = typer.Typer(no_args_is_help=True, help="Make, prepare and inspect datasets.")
# soft_wrap: a message is one line however long its paths (logs are grepped); tables still fit the width
out, err = Console(soft_wrap=True), Console(stderr=True, soft_wrap=True)


def _ratios(text: Optional[str]) -> Optional[list[float]]:
    if text is None:
        return None
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise MtkdError(f"--split {text!r}: expected comma-separated numbers such as 0.8,0.1,0.1") from None


@data_app.command("synth")
def data_synth(
    rows: int = typer.Option(100_000, "--rows", min=10, help="Number of rows to generate."),
    seed: int = typer.Option(0, "--seed", help="Seed of the ground truth and the sample."),
    task: str = typer.Option("binary", "--task", help="binary or multiclass."),
    classes: Optional[int] = typer.Option(None, "--classes", min=2, help="Classes for --task multiclass (default 4)."),
    with_truth: bool = typer.Option(False, "--with-truth", help="Add the true click probability as column p_true."),
    out_file: Path = typer.Option(..., "--out", help="CSV file to write."),
) -> None:
    """Write Criteo-shaped synthetic CTR data with a known ground truth (and FILE.meta.json)."""
    from mtkd.data.synthetic import write_synthetic

    if task not in ("binary", "multiclass"):
        raise MtkdError(f"--task {task!r}: expected binary or multiclass")
    if classes is not None and task == "binary":
        raise MtkdError(f"--classes {classes}: classes are for --task multiclass (binary data has two)")
    meta = write_synthetic(out_file, rows, seed, task, classes or 4, with_truth)
    bayes = meta["bayes_optimal"]["test_split"]
    best = ", ".join(f"{k} {v:.4f}" for k, v in bayes.items() if k in ("auc", "logloss", "accuracy"))
    out.print(f"wrote {rows:,} rows to {out_file} (seed {seed}); Bayes-optimal on the default test split: {best}")


@data_app.command("prepare")
def data_prepare(
    schema: Path = typer.Option(..., "--schema", help="Dataset schema YAML (see configs/datasets/)."),
    train: list[Path] = typer.Option(..., "--train", help="Training file(s); repeat to pool several. Split into valid/test when those are not given."),
    valid: Optional[Path] = typer.Option(None, "--valid", help="Validation file."),
    test: Optional[Path] = typer.Option(None, "--test", help="Test file."),
    split: Optional[str] = typer.Option(None, "--split", help="Ratios dividing --train into the splits not given as files, e.g. 0.8,0.1,0.1."),
    ordered: Optional[bool] = typer.Option(None, "--ordered/--random", help="Ordered split (first rows train, last rows test) or seeded random split."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Seed of the random split (default: the schema's)."),
    force: bool = typer.Option(False, "--force", help="Replace --out if it holds another dataset."),
    out_dir: Path = typer.Option(..., "--out", help="Dataset directory to create."),
) -> None:
    """Encode raw files into a dataset directory (arrays per split, encoder.json, manifest.json)."""
    import time

    from mtkd.data.prepare import prepare
    from mtkd.data.schema import load_schema
    from mtkd.data.store import MANIFEST

    sch = load_schema(schema)
    before = _mtime(out_dir / MANIFEST)  # unchanged after: the dataset was current, nothing was read
    t0 = time.perf_counter()
    manifest = prepare(sch, out_dir, train, valid, test, _ratios(split), ordered, seed, force,
                       log=lambda s: err.print(f"[dim]{s}[/dim]"))
    dt = time.perf_counter() - t0
    rows = sum(s["rows"] for s in manifest["splits"].values())
    _print_manifest(manifest, out_dir)
    if before is not None and before == _mtime(out_dir / MANIFEST):
        out.print(f"{rows:,} rows, already prepared: nothing to do -> {out_dir}")
    else:
        out.print(f"{rows:,} rows in {dt:.1f}s ({rows / max(dt, 1e-9):,.0f} rows/s) -> {out_dir}")


def _mtime(path: Path) -> int | None:
    return path.stat().st_mtime_ns if path.exists() else None


@data_app.command("info")
def data_info(path: Path = typer.Argument(..., help="Dataset directory."),
              as_json: bool = typer.Option(False, "--json", help="Print the manifest as JSON."),
              verify: bool = typer.Option(False, "--verify", help="Also recompute every array's checksum "
                                          "(reads the whole dataset).")) -> None:
    """Show a prepared dataset's manifest: splits, label rates, features and vocabularies. Every
    array is opened (its header read, its shape checked), so a damaged dataset says so here."""
    from mtkd.data.store import Dataset, read_manifest

    manifest = read_manifest(path)
    ds = Dataset(path)
    for name in ds.split_names:
        ds.split(name)
    hashed = _hashed(path)  # an encoder.json that is not one says so here, as a damaged array does
    if verify and (bad := ds.verify()):
        raise DataError(f"{path}: {len(bad)} file(s) do not match their checksum: {', '.join(bad)}; "
                        "the dataset is damaged: prepare it again (`mtkd data prepare ... --force`)")
    if as_json:
        out.print_json(json.dumps(manifest))
    else:
        _print_manifest(manifest, path, hashed)
        if verify:
            files = sum(len(s["arrays"]) for s in manifest["splits"].values())
            out.print(f"verified: all {files} array files and encoder.json match their checksums")


def _print_manifest(m: dict, path: Path, hashed: dict[str, int] | None = None) -> None:
    out.print(f"[bold]{m.get('name')}[/bold] ({m.get('task')}) at {path}  checksum {m.get('checksum')}")
    t = Table(title="splits")
    for c in ("split", "rows", "label rate" if m.get("task") == "binary" else "classes"):
        t.add_column(c, justify="right" if c != "split" else "left")
    for name, s in m["splits"].items():
        extra = s.get("label_rate") if m.get("task") == "binary" else len(s.get("class_counts", {}))
        t.add_row(name, f"{s['rows']:,}", f"{extra:.4f}" if isinstance(extra, float) else str(extra))
    out.print(t)
    fm = m["feature_map"]
    f = Table(title="features")
    for c in ("feature", "type", "size"):
        f.add_column(c)
    hashed = _hashed(path) if hashed is None else hashed
    for c in fm["categorical"]:
        f.add_row(c["name"], "categorical", f"{_ids(c, hashed)}{_shares(c)}")
    for n in fm["numeric"]:
        f.add_row(n, "numeric", "1")
    for s in fm["sequences"]:
        f.add_row(s["name"], "sequence", f"{_ids(s, hashed)}{_shares(s)}, max_len {s['max_len']}")
    for n in fm.get("scores", []):
        f.add_row(n, "score", "1")
    out.print(f)


def _hashed(path: Path) -> dict[str, int]:
    """Buckets of each feature hashed with `hash_buckets` (from the dataset's encoder.json); a
    missing file or one that is not an encoder (not JSON, no `features` table) is an error."""
    enc = path / "encoder.json"
    try:
        features = json.loads(enc.read_text())["features"]
        hashed = {n: e["hash_buckets"] for n, e in features.items() if "hash_buckets" in e}
        if any(type(b) is not int for b in hashed.values()):
            raise TypeError("hash_buckets is not a whole number")
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        why = (exc.strerror if isinstance(exc, OSError) else f"not JSON: {exc}" if isinstance(exc, ValueError)
               else "not an encoder: no `features` table of feature entries")
        raise DataError(f"{enc}: cannot be read ({why}); the dataset is damaged: prepare it again "
                        "(`mtkd data prepare ... --force`)") from None
    return hashed


def _ids(field: dict, hashed: dict[str, int]) -> str:
    owner = field.get("share") or field["name"]
    return f"hashed, {hashed[owner]:,} buckets" if owner in hashed else f"vocab {field['vocab_size']:,}"


def _shares(field: dict) -> str:
    """", shares NAME" for a field that reads another field's vocabulary and embedding table."""
    return f", shares {field['share']}" if field.get("share") else ""
