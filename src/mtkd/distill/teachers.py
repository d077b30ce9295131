"""Teachers and their cached outputs.

A teacher is an mtkd run (`runs/deepfm`) or a score column of the dataset (predictions of
a model trained elsewhere). `score_teachers` computes each teacher's logits (and, when
asked, hidden vectors) for every split once and stores them beside the dataset in
`DATA/teachers/<name>-<key>/`, where the key hashes the teacher's weights (or column) and
the dataset checksum: retraining a teacher or re-preparing the data changes the key, so a
stale cache is never read. Offline distillation then joins these arrays by row number.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch

from mtkd import jsonout
from mtkd.config import check_dir_name
from mtkd.data.atomic import atomic_write_text, sweep_partials
from mtkd.data.loader import BatchLoader
from mtkd.data.store import Dataset
from mtkd.distill.hidden import fit_code
from mtkd.errors import ConfigError, MtkdError
from mtkd.train.metrics import compute_metrics
from mtkd.train.checkpoint import file_digest
from mtkd.train.device import current_cuda_devices
from mtkd.train.rows import Rows

CACHE_DIR = "teachers"
CACHE_VERSION = 1


@dataclass(frozen=True)
class TeacherSpec:
    """`run`: an mtkd run directory; or `score`: a score column (`kind`: probability or logit)."""

    name: str
    run: str | None = None
    score: str | None = None
    kind: str = "probability"

    def __post_init__(self) -> None:
        try:
            check_dir_name(self.name)
        except ValueError as e:
            raise ConfigError(f"teacher name: {e} (its cache directory); give another as NAME=RUN_DIR or "
                              "NAME=score:COLUMN") from None
        if (self.run is None) == (self.score is None):
            raise ConfigError(f"teacher {self.name!r}: give exactly one of `run` or `score`")
        if self.kind not in ("probability", "logit"):
            raise ConfigError(f"teacher {self.name!r}: kind must be probability or logit")


def teacher_ident(spec: TeacherSpec) -> str:
    """What the teacher is: the hash of its best weights, or its score column."""
    if spec.run is not None:
        best = Path(spec.run) / "best.pt"
        if not best.exists():
            raise MtkdError(f"teacher {spec.name!r}: {spec.run} has no best.pt; train it first")
        if not (Path(spec.run) / "summary.json").exists():  # its best.pt is some epoch of a run cut short
            raise MtkdError(f"teacher {spec.name!r}: {spec.run} has not finished (no summary.json); finish it "
                            "first: run its `mtkd train` command again with --resume")
        return f"run:{file_digest(best)}"
    return f"score:{spec.score}:{spec.kind}"


def _key(ident: str, dataset: Dataset, with_hidden: bool, hidden_code: int) -> str:
    raw = f"{CACHE_VERSION}|{ident}|{dataset.checksum}|hidden={with_hidden}"
    if with_hidden and hidden_code:
        raw += f"|code={hidden_code}"
    return hashlib.sha256(raw.encode()).hexdigest()[:16]


def find_cache(dataset: Dataset, spec: TeacherSpec, with_hidden: bool, hidden_code: int = 0) -> tuple[Path, Path | None]:
    """(the cache dir for this request, a finished cache that serves it or None). A request for
    logits only is also served by a cache of the same weights that holds hidden vectors too: its
    logits are the same numbers, and `mtkd run` scores teachers once for a policy student and
    once for an average one otherwise (on full Criteo, hours of teacher inference)."""
    root, ident = dataset.root / CACHE_DIR, teacher_ident(spec)
    exact = root / f"{spec.name}-{_key(ident, dataset, with_hidden, hidden_code)}"
    if (exact / "meta.json").exists() and cache_damage(exact) is None:
        return exact, exact
    if not with_hidden:
        for other in sorted(root.glob(f"{spec.name}-*")):
            try:
                m = json.loads((other / "meta.json").read_text())
            except (OSError, json.JSONDecodeError):
                continue
            code = int(m.get("hidden_code", 0))
            if m.get("with_hidden") and other.name == f"{spec.name}-{_key(ident, dataset, True, code)}" \
                    and cache_damage(other) is None:
                return exact, other
    return exact, None


def _file_record(path: Path, hashed: bool) -> dict[str, Any]:
    """What meta.json records of a cache file: its size, and for the logits (N floats a split,
    cheap to read) its hash. Hidden vectors (N x D, gigabytes) are checked by size alone."""
    return {"bytes": path.stat().st_size, **({"sha256": file_digest(path)} if hashed else {})}


def cache_damage(cache: Path) -> str | None:
    """What is wrong with a finished cache (a file missing, cut short or changed since it was
    written), or None. A damaged cache was read as if whole: a student learned from logits a
    bad disk or a stray write had changed. Caches from before files were recorded pass."""
    try:
        files = json.loads((cache / "meta.json").read_text()).get("files", {})
    except (OSError, ValueError, AttributeError):
        return "meta.json unreadable"
    for name, want in files.items():
        p = cache / name
        if not p.is_file():
            return f"{name} missing"
        if p.stat().st_size != want.get("bytes"):
            return f"{name} is {p.stat().st_size:,} bytes, {want.get('bytes'):,} when written"
        if "sha256" in want and file_digest(p) != want["sha256"]:
            return f"{name} changed since it was written"
    return None


def _batch_outputs(model: torch.nn.Module, dataset: Dataset, split: str, batch_size: int,
                   device: torch.device | str, with_hidden: bool,
                   code: Callable[[torch.Tensor], torch.Tensor] | None = None
                   ) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
    """(logits, hidden vectors or their `code`) of each batch of a split, in row order."""
    model.eval()
    with torch.no_grad():
        for batch in BatchLoader(dataset, split, batch_size, shuffle=False):
            out = model(batch.to(device))
            h = (out.hidden if code is None else code(out.hidden)).float().cpu().numpy() if with_hidden else None
            yield out.logits.float().cpu().numpy(), h


def predict_split(model: torch.nn.Module, dataset: Dataset, split: str, batch_size: int = 8192,
                  device: torch.device | str = "cpu", with_hidden: bool = False
                  ) -> tuple[np.ndarray, np.ndarray | None]:
    """Logits (and hidden vectors) of a whole split in row order, in memory (buffers sized once:
    see `train.rows`)."""
    rows = Rows(dataset.split(split).rows)
    for z, h in _batch_outputs(model, dataset, split, batch_size, device, with_hidden):
        rows.add(torch.from_numpy(z), None if h is None else torch.from_numpy(h))
    logits, hidden = rows.tensors() or (torch.empty(0), None)
    return logits.numpy(), None if hidden is None else hidden.numpy()


def _write_split(model: torch.nn.Module, dataset: Dataset, split: str, dest: Path, device: str,
                 with_hidden: bool, code: Callable[[torch.Tensor], torch.Tensor] | None,
                 batch_size: int = 8192) -> np.ndarray:
    """Score a split a batch at a time straight into memory-mapped .npy files (logits; hidden
    vectors or their code), so a 45M-row split never sits in memory. Returns the logits."""
    n = dataset.split(split).rows
    arrays: dict[str, np.ndarray] = {}

    def put(name: str, v: np.ndarray, start: int) -> None:
        if name not in arrays:
            arrays[name] = np.lib.format.open_memmap(dest / f"{split}_{name}.npy", mode="w+", dtype=np.float32,
                                                     shape=(n, *v.shape[1:]))
        arrays[name][start : start + len(v)] = v

    start = 0
    for z, h in _batch_outputs(model, dataset, split, batch_size, device, with_hidden, code):
        put("logits", z, start)
        if h is not None:
            put("hidden", h, start)
        start += len(z)
    if not arrays:  # an empty split
        shape = (0,) if dataset.feature_map.task == "binary" else (0, dataset.feature_map.output_dim)
        np.save(dest / f"{split}_logits.npy", np.zeros(shape, np.float32))
    for a in arrays.values():
        a.flush()
    arrays.clear()
    return np.load(dest / f"{split}_logits.npy", mmap_mode="r")


def _score_column_logits(dataset: Dataset, split: str, spec: TeacherSpec) -> np.ndarray:
    cols = list(dataset.feature_map.scores)
    if spec.score not in cols:
        raise ConfigError(f"teacher {spec.name!r}: score column {spec.score!r} is not in the dataset "
                          f"(its schema declares scores: {cols}); add it under `scores:` and prepare again")
    if dataset.feature_map.task != "binary":
        raise ConfigError(f"teacher {spec.name!r}: a score column is one probability or logit per row, which "
                          f"fits a binary task; this dataset is {dataset.feature_map.task} "
                          f"({dataset.feature_map.num_classes} classes): train the teacher as a run and pass "
                          "its run directory")
    s = np.asarray(dataset.split(split).arrays["scores"][:, cols.index(spec.score)], dtype=np.float64)
    missing = int(np.isnan(s).sum())
    if missing:
        raise MtkdError(f"teacher {spec.name!r}: column {spec.score!r} is missing in {missing:,} of the "
                        f"{s.size:,} rows of the {split} split (KD needs a teacher output for every row); fill "
                        "them in the raw files, or drop those rows, and prepare again")
    if not np.isfinite(s.astype(np.float32)).all():  # (prepare refuses them; a dataset of an older version)
        raise MtkdError(f"teacher {spec.name!r}: column {spec.score!r} holds infinite values in the {split} split "
                        "(or values past float32's 3.4e38); fix them in the raw files and prepare again")
    if spec.kind == "logit":
        return s.astype(np.float32)
    if s.min() < 0 or s.max() > 1:
        raise MtkdError(f"teacher {spec.name!r}: column {spec.score!r} has values outside [0, 1]; "
                        "set kind: logit if it holds logits")
    p = np.clip(s, 1e-7, 1 - 1e-7)
    return np.log(p / (1 - p)).astype(np.float32)


def score_teachers(dataset: Dataset, specs: list[TeacherSpec], with_hidden: bool = False,
                   device: str = "cpu", log: Callable[[str], None] = print, hidden_code: int = 0) -> list[Path]:
    """Make sure every teacher's outputs are cached for every split; returns the cache dirs.
    `hidden_code: K` caches the K-float code of each hidden vector (`distill.hidden`), not the
    vector itself.

    Runs with the global random state saved and restored: building a teacher model to load its
    weights draws an initialisation, and a run that scores must train exactly like one that finds
    the cache (same seed, same result)."""
    with torch.random.fork_rng(devices=current_cuda_devices()):
        return _score_teachers(dataset, specs, with_hidden, device, log, hidden_code)


def _score_teachers(dataset: Dataset, specs: list[TeacherSpec], with_hidden: bool,
                    device: str, log: Callable[[str], None], hidden_code: int = 0) -> list[Path]:
    from mtkd.train.run import load_run

    root = dataset.root / CACHE_DIR
    dirs = []
    for spec in specs:
        out, found = find_cache(dataset, spec, with_hidden, hidden_code)
        if found is not None:
            dirs.append(found)
            log(f"teacher {spec.name}: cached ({found.name})")
            continue
        dirs.append(out)
        if (out / "meta.json").exists():  # finished once, refused by cache_damage now, or a peer's just made
            damage = cache_damage(out)
            if damage is None:
                log(f"teacher {spec.name}: cached ({out.name})")
                continue
            log(f"teacher {spec.name}: cache {out.name} is damaged ({damage}); scoring it again")
            shutil.rmtree(out)
        tmp = root / f".{out.name}.partial-{os.getpid()}"
        sweep_partials(root, out.name)  # killed scorings' leftovers and this process's own; never a live one
        tmp.mkdir(parents=True)
        try:
            meta: dict[str, Any] = {"name": spec.name, "run": spec.run, "score": spec.score, "kind": spec.kind,
                                    "dataset_checksum": dataset.checksum, "with_hidden": with_hidden,
                                    "hidden_code": hidden_code if with_hidden else 0, "splits": {}}
            model, code, batch_size = None, None, 8192
            if spec.run is not None:
                run_cfg, _, model = load_run(Path(spec.run), device, data=dataset.root)
                batch_size = run_cfg.eval_batch_size  # the teacher's own: its CIN or attention sets the memory
                if with_hidden and hidden_code:
                    code = fit_code(model, dataset, hidden_code, device, batch_size=batch_size)
                    code.save(tmp / "hidden_code.npz")
            for split in dataset.split_names:
                if model is not None:
                    logits = _write_split(model, dataset, split, tmp, device, with_hidden, code, batch_size)
                else:
                    logits = _score_column_logits(dataset, split, spec)
                    np.save(tmp / f"{split}_logits.npy", logits)
                labels = np.asarray(dataset.split(split).arrays["label"])
                meta["splits"][split] = {"rows": int(logits.shape[0]),
                                         **compute_metrics(dataset.feature_map.task, labels, logits)}
            meta["files"] = {p.name: _file_record(p, p.name.endswith("_logits.npy"))
                             for p in sorted(tmp.iterdir()) if p.suffix in (".npy", ".npz")}
            atomic_write_text(tmp / "meta.json", jsonout.dumps(meta, indent=1))  # a one-class split: null AUC
            _drop_stale(root, spec, with_hidden, hidden_code, out)
            try:
                os.replace(tmp, out)
            except OSError:  # another process cached the same key meanwhile: theirs is as good
                if not (out / "meta.json").exists():
                    raise
                shutil.rmtree(tmp, ignore_errors=True)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        valid = meta["splits"].get("valid", {})
        log(f"teacher {spec.name}: scored {sum(s['rows'] for s in meta['splits'].values()):,} rows "
            f"(valid {', '.join(f'{k} {v:.4f}' for k, v in valid.items() if k != 'rows')})")
    return dirs


def _drop_stale(root: Path, spec: TeacherSpec, with_hidden: bool, hidden_code: int, keep: Path) -> None:
    """Remove caches of the SAME teacher (same run directory or score column, same hidden
    setting) under an older key: it was retrained. Caches of other runs that share the name
    (other seeds of an experiment) are left alone."""
    for other in root.glob(f"{spec.name}-*"):
        if other == keep or not (other / "meta.json").exists():
            continue
        try:
            m = json.loads((other / "meta.json").read_text())
        except (OSError, json.JSONDecodeError):
            continue
        same = (_same_path(m.get("run"), spec.run) and m.get("score") == spec.score and m.get("kind") == spec.kind
                and bool(m.get("with_hidden")) == with_hidden
                and int(m.get("hidden_code", 0)) == (hidden_code if with_hidden else 0))
        if same:
            shutil.rmtree(other, ignore_errors=True)


def _same_path(a: str | None, b: str | None) -> bool:
    """`./runs/x` and `runs/x` (and a symlink to it) are one teacher run."""
    return a == b or (a is not None and b is not None and Path(a).resolve() == Path(b).resolve())


def _open_cached(path: Path) -> np.ndarray:
    try:
        return np.load(path, mmap_mode="r")
    except (OSError, ValueError, EOFError) as e:  # cut short or gone since the cache was checked
        raise MtkdError(f"{path}: cannot read this teacher output ({type(e).__name__}: {e}); delete "
                        f"{path.parent} and run again, which scores the teacher again") from None


class TeacherSet:
    """Cached outputs of several teachers, stacked per split: logits [N, T] or [N, T, C]."""

    def __init__(self, dataset: Dataset, specs: list[TeacherSpec], with_hidden: bool = False, hidden_code: int = 0):
        self.dataset = dataset
        self.specs = specs
        self.names = [s.name for s in specs]
        if len(set(self.names)) != len(self.names):
            raise ConfigError(f"teacher names must be unique: {self.names}")
        self.dirs = []
        for spec in specs:
            _, d = find_cache(dataset, spec, with_hidden, hidden_code)
            if d is None:
                raise MtkdError(f"teacher {spec.name!r} has no cached outputs for {dataset.root} "
                                f"(or its cache is stale or damaged); run `mtkd score` first")
            self.dirs.append(d)
        self.meta = [json.loads((d / "meta.json").read_text()) for d in self.dirs]
        self.with_hidden = with_hidden
        self.view: Any = None  # a MergedDataset when validation rows train the student
        self._logits: dict[str, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.specs)

    def _load(self, split: str, what: str, i: int) -> np.ndarray:
        """One teacher's array for `split`; a MergedDataset's splits are gathered from base splits."""
        view = self.view
        if view is None:
            return _open_cached(self.dirs[i] / f"{split}_{what}.npy")
        parts = {b: _open_cached(self.dirs[i] / f"{b}_{what}.npy") for b, _ in view.row_map(split)}
        return view.gather(split, parts)

    def logits(self, split: str) -> np.ndarray:
        if split not in self._logits:
            arrs = [self._load(split, "logits", i) for i in range(len(self.dirs))]
            self._logits[split] = np.ascontiguousarray(np.stack(arrs, axis=1), dtype=np.float32)
        return self._logits[split]

    def hidden(self, split: str) -> list[np.ndarray | None] | None:
        """Hidden vectors per teacher (None for score-column teachers, which have none)."""
        if not self.with_hidden:
            return None
        return [self._load(split, "hidden", i) if (d / "train_hidden.npy").exists() else None
                for i, d in enumerate(self.dirs)]

    def hidden_dims(self) -> list[int]:
        """Hidden size per teacher; 0 for teachers without hidden vectors."""
        if not self.with_hidden:
            return [0] * len(self.dirs)
        return [int(_open_cached(d / "train_hidden.npy").shape[1]) if (d / "train_hidden.npy").exists()
                else 0 for d in self.dirs]

    def metric(self, split: str, name: str) -> list[float]:
        return [float("nan") if (v := m["splits"][split][name]) is None else float(v) for m in self.meta]  # null
