"""Run directories: start, resume or reload a training run (`runs/<name>/`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import numpy as np
import yaml

from mtkd.config import TrainConfig
from mtkd.config_io import load_yaml
from mtkd.data.atomic import atomic_write_text
from mtkd.data.batch import Batch
from mtkd.data.loader import BatchLoader
from mtkd.data.store import ENCODER, Dataset
from mtkd.errors import ConfigError, MtkdError
from mtkd.models import build_model, model_params
from mtkd.models.base import CTRModel
from mtkd.train.checkpoint import load_checkpoint
from mtkd.train.device import resolve_device
from mtkd.train.objectives import Supervised
from mtkd.train.trainer import Trainer, configure_torch, seed_everything

CONFIG = "config.yaml"


def _train_dict(cfg: TrainConfig) -> dict[str, Any]:
    """The saved form of a run's settings: every option, model parameters with their defaults."""
    d = cfg.model_dump(mode="json")
    d["params"] = {**model_params(cfg.model), **cfg.params}
    return d


def saved_run_config(run_dir: Path) -> dict[str, Any]:
    """RUN/config.yaml, what trained the run. A damaged one is named with the way out, not a
    YAML traceback from every command that reads it (evaluate, export, predict, serve, distill)."""
    path = Path(run_dir) / CONFIG
    fix = f"it is what trained the run {run_dir}; train that run again (`--force`)"
    try:
        saved = load_yaml(path)
    except ConfigError as e:
        raise ConfigError(f"{e}; {fix}") from None
    if not isinstance(saved, dict) or not isinstance(saved.get("train"), dict) or not isinstance(saved.get("data"), str):
        raise ConfigError(f"{path}: damaged (not the mapping with `train` and `data` that mtkd saves); {fix}")
    _without_idle_keys(saved["train"])
    return saved


def _without_idle_keys(train: dict[str, Any]) -> None:
    """Keys earlier versions accepted and ignored, refused for new configs now, read back as the
    run used them: a finished run stays usable and reused, not refused or trained again for them
    (a run or score teacher's `params`, a run teacher's `kind`, `share_embedding` offline)."""
    d = train.get("distill")
    if not isinstance(d, dict):
        return
    if d.get("mode", "offline") != "cotrain" and d.get("share_embedding"):
        d["share_embedding"] = False
    for t in d.get("teachers") or []:
        if not isinstance(t, dict):
            continue
        if t.get("model") is None and t.get("params"):
            t["params"] = {}
        if t.get("score") is None and t.get("kind", "probability") != "probability":
            t["kind"] = "probability"


def run_config_dict(cfg: TrainConfig, dataset: Dataset, teachers: bool = True) -> dict[str, Any]:
    """What a run is: its settings, its dataset and, for a student, what each offline teacher run
    is (the hash of its best weights: a teacher retrained in place keeps its path; `teachers`
    False leaves them out, for comparing settings alone without reading every checkpoint)."""
    d = {"data": str(dataset.root.resolve()), "dataset_checksum": dataset.checksum, "train": _train_dict(cfg)}
    if teachers and cfg.distill is not None and cfg.distill.mode == "offline":
        from mtkd.distill.build import teacher_plan
        from mtkd.distill.teachers import teacher_ident

        if idents := {s.name: teacher_ident(s) for s in teacher_plan(cfg.distill)[0] if s.run is not None}:
            d["teachers"] = idents
    return d


def _normalised(saved: dict[str, Any]) -> dict[str, Any]:
    """A saved run config with the settings added since it was written at their defaults, so a
    new option does not make every earlier run look changed. Options whose default changed what
    training does are read at the value the earlier run had (`output_prior`: runs before it started
    from the layer's own bias)."""
    try:
        cfg = TrainConfig.model_validate({"output_prior": False, **saved["train"]})
    except Exception:  # not valid any more: compare as it is, and report the difference
        return saved
    return {**saved, "train": _train_dict(cfg)}


# where a run trains, not what it learns: a run killed on one machine may go on on another
_PLACEMENT = ("device", "data_on_device")


def _what_it_learns(train: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in train.items() if k not in _PLACEMENT}


def check_run_dir(out: Path, resume: bool, force: bool, cfg_dict: dict[str, Any]) -> None:
    """Refuse to overwrite a run by accident; on --resume, refuse a changed config."""
    if out.exists() and not out.is_dir():
        raise MtkdError(f"--out {out}: is a file, not a run directory; choose another --out")
    if resume and force:
        raise MtkdError(f"{out}: --resume continues the run and --force starts it over; pass one of them")
    if not out.exists() or not any(out.iterdir()):
        return
    saved = out / CONFIG
    if force or resume:  # what a killed write left (`.last.pt.XXXX.tmp`: a whole checkpoint each)
        for name in ("last.pt", "best.pt", "metrics.jsonl", "summary.json", CONFIG):
            for tmp in out.glob(f".{name}.*.tmp"):
                tmp.unlink(missing_ok=True)
    if force:
        for name in ("last.pt", "best.pt", "metrics.jsonl", "summary.json", CONFIG):
            (out / name).unlink(missing_ok=True)
        return
    if not saved.exists():
        raise MtkdError(f"{out}: directory is not empty and holds no mtkd run; choose another --out")
    if not resume:
        state = "a finished" if (out / "summary.json").exists() else "an unfinished"
        raise MtkdError(f"{out}: already holds {state} run; pass --resume to continue it, --force to start "
                        "over, or choose another --out")
    diff = changed_settings(out, cfg_dict)
    if diff:
        raise MtkdError(f"{out}: --resume with a different configuration ({', '.join(diff)}); "
                        "resume with the same settings or use --force to start over")


def changed_settings(out: Path, cfg_dict: dict[str, Any], teachers: bool = True) -> list[str]:
    """What differs between the run saved in `out` and `cfg_dict` (train keys, `dataset`,
    `teacher NAME (retrained)` unless `teachers` is False, or `data path`); empty when the same."""
    saved = saved_run_config(out)
    retrained = (_retrained(saved, cfg_dict) or []) if teachers else []
    old, new = ({k: v for k, v in d.items() if k != "teachers"} for d in (_normalised(saved), cfg_dict))
    old, new = ({**d, "train": _what_it_learns(d.get("train", {}))} for d in (old, new))
    if old == new and not retrained:
        return []
    diff = _differences(old.get("train", {}), new["train"])
    if old.get("dataset_checksum") != new["dataset_checksum"]:
        diff.append("dataset")
    diff += [f"teacher {n} (retrained)" for n in retrained]
    return diff or ["data path"]


def _differences(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    """`key` or `key.sub: old -> new` for each setting that differs, down into nested sections
    (params, optimizer, distill): `params.hidden_units: [8] -> [24]`, not only `params`."""
    out = []
    for k in sorted(set(old) | set(new), key=str):
        a, b = old.get(k), new.get(k)
        if a == b:
            continue
        if isinstance(a, dict) and isinstance(b, dict):
            out += _differences(a, b, f"{prefix}{k}.")
        elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b) and \
                all(isinstance(x, dict) for x in a + b):  # teachers: by name, else by position
            keyed = lambda xs: {x.get("name", i): x for i, x in enumerate(xs)}  # noqa: E731
            out += _differences(keyed(a), keyed(b), f"{prefix}{k}.")
        elif not prefix and k in _SECTIONS:  # a whole section appeared or went: its name says it
            out.append(k)
        else:
            out.append(f"{prefix}{k}: {_shown(a, k in old)} -> {_shown(b, k in new)}")
    return out


_SECTIONS = ("params", "optimizer", "distill", "word_vectors")


def _shown(v: Any, present: bool) -> str:
    text = "(not set)" if not present else repr(v)
    return text if len(text) <= 60 else text[:57] + "..."


def retrained_teachers(out: Path, cfg_dict: dict[str, Any]) -> list[str] | None:
    """Teachers whose best weights differ from those the run in `out` learned from; None when
    its config predates recording them."""
    return _retrained(saved_run_config(out), cfg_dict)


def _retrained(saved: dict[str, Any], cfg_dict: dict[str, Any]) -> list[str] | None:
    if saved.get("teachers") is None:
        return None
    now = cfg_dict.get("teachers") or {}
    return sorted(n for n, ident in saved["teachers"].items() if n in now and ident != now[n])


def train_run(cfg: TrainConfig, data: Path, out: Path, resume: bool = False, force: bool = False,
              log: Callable[[str], None] = print, progress: bool = True) -> dict[str, Any]:
    """Train one model into `out` (the `mtkd train` and `mtkd distill` commands)."""
    from mtkd.dist import leave_world, world_from_env

    rank, world = world_from_env(resolve_device(cfg.device).type)  # (0, 1) unless started by torchrun
    summary = _train_run(cfg, data, out, resume, force, log, progress, rank, world)
    leave_world(world)
    return summary


def prior_batch(dataset: Dataset, rows: int = 1024) -> Batch | None:
    """The first training rows: where `init_output_prior` measures an untrained model's offset."""
    n = min(rows, dataset.split("train").rows)
    if n == 0:
        return None
    return BatchLoader(dataset, "train", batch_size=n, shuffle=False).gather(np.arange(n))


def build_run_model(cfg: TrainConfig, dataset: Dataset, log: Callable[[str], None] = print,
                    warm: bool = True) -> CTRModel:
    """The model a run starts from: built, its output at the label prior, then word vectors and
    `init_from` weights copied in (they override what they cover). `warm=False` (a resume:
    last.pt holds every weight) leaves those files out, so a deleted source run does not matter."""
    model = build_model(cfg.model, dataset.feature_map, **cfg.params)
    if cfg.output_prior:
        model.init_output_prior(dataset.label_frequencies(), prior_batch(dataset))
    if not warm:
        return model
    if cfg.word_vectors:
        from mtkd.models.word_vectors import init_word_vectors

        init_word_vectors(model, dataset.root / ENCODER, cfg.word_vectors, log)
    if cfg.init_from:
        from mtkd.train.warm_start import init_from_run

        init_from_run(model, cfg.init_from, dataset.checksum, log)
    return model


def _train_run(cfg: TrainConfig, data: Path, out: Path, resume: bool, force: bool, log: Callable[[str], None],
               progress: bool, rank: int, world: int) -> dict[str, Any]:
    from mtkd.dist import barrier

    dataset = Dataset(data)
    cfg_dict = run_config_dict(cfg, dataset)
    if rank == 0 or not force:  # every rank refuses by itself (else it only sees rank 0 vanish); rank 0 clears
        check_run_dir(out, resume, force, cfg_dict)
    barrier(world)
    if resume and (out / "summary.json").exists() and not (out / "last.pt").exists():
        return json.loads((out / "summary.json").read_text())
    fresh = rank == 0 and not (out / CONFIG).exists()
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / CONFIG, yaml.safe_dump(cfg_dict, sort_keys=False))
    barrier(world)
    if resume and (out / "summary.json").exists():
        if rank == 0:
            log(f"{out}: run already finished")
        return json.loads((out / "summary.json").read_text())
    try:
        trainer = _build_trainer(cfg, dataset, out, log, progress, rank, world,
                                 warm=not (resume and (out / "last.pt").exists()))
    except BaseException:
        if fresh:  # nothing trained: no config left behind to make the next try ask for --resume
            (out / CONFIG).unlink(missing_ok=True)
            if not any(out.iterdir()):
                out.rmdir()
        raise
    return trainer.fit(resume=resume)


def _build_trainer(cfg: TrainConfig, dataset: Dataset, out: Path, log: Callable[[str], None], progress: bool,
                   rank: int, world: int, warm: bool = True) -> Trainer:
    """Model, objective (teachers scored or read from their cache) and the loop of one run."""
    from mtkd.dist import barrier

    configure_torch()
    seed_everything(cfg.seed)
    model = build_run_model(cfg, dataset, log, warm)
    from mtkd.distill.build import build_objective, score_offline_teachers

    if world > 1:  # one rank scores the teachers; the others read its cache
        if rank == 0:
            score_offline_teachers(cfg, dataset, device=str(resolve_device(cfg.device)), log=log)
        barrier(world)
    objective = build_objective(cfg, dataset, model, device=str(resolve_device(cfg.device)), log=log)
    if cfg.distill is not None and cfg.distill.valid_holdout is not None:
        from mtkd.data.merged import MergedDataset

        dataset = MergedDataset(dataset, cfg.distill.valid_holdout, seed=cfg.seed)
        if hasattr(objective, "teachers"):  # cached outputs join by row; co-trained teachers read batches
            objective.teachers.view = dataset  # type: ignore[attr-defined]
    elif cfg.train_fraction is not None and cfg.train_fraction < 1:
        from mtkd.data.merged import SubsetDataset

        dataset = SubsetDataset(dataset, cfg.train_fraction, seed=cfg.seed)
        if hasattr(objective, "teachers"):
            objective.teachers.view = dataset  # type: ignore[attr-defined]
    return Trainer(cfg, dataset, model, objective, out, log=log, progress=progress, rank=rank, world_size=world)


def load_run(run_dir: Path, device: str = "cpu", data: Path | None = None) -> tuple[TrainConfig, Dataset, CTRModel]:
    """Config, dataset and model with its best weights, from a finished (or running) run."""
    run_dir = Path(run_dir)
    p = run_dir / CONFIG
    if not p.exists():
        raise MtkdError(f"{run_dir}: not an mtkd run (no {CONFIG}); train one with `mtkd train`")
    saved = saved_run_config(run_dir)
    from mtkd.config_io import parse_model

    cfg = parse_model(TrainConfig, saved["train"], str(p))
    configure_torch()
    if data is None and not (Path(saved["data"]) / "manifest.json").exists():
        raise MtkdError(f"{run_dir}: its dataset {saved['data']} is not there any more (moved or deleted); give "
                        "its new place with --data DIR (mtkd evaluate, predict, export or serve), or prepare it again "
                        "at that path")
    dataset = Dataset(data or saved["data"])
    if dataset.checksum != saved.get("dataset_checksum"):
        raise MtkdError(f"{run_dir}: was trained on dataset {saved.get('dataset_checksum')}, but "
                        f"{dataset.root} is {dataset.checksum}; point --data at the original dataset")
    model = build_model(cfg.model, dataset.feature_map, **cfg.params)
    best = run_dir / "best.pt"
    if not best.exists():
        raise MtkdError(f"{run_dir}: no best.pt yet; the run has not finished an evaluation")
    try:
        model.load_state_dict(load_checkpoint(best, resolve_device(device))["model"])
    except RuntimeError as e:  # shapes or names: weights of another version's form of this model
        raise MtkdError(f"{best}: its weights do not fit the {cfg.model} these settings build now (written by "
                        f"another mtkd version whose {cfg.model} had other layers?): {str(e).strip()[:300]}; "
                        "train the run again (`--force`)") from None
    return cfg, dataset, model.to(resolve_device(device)).eval()


def evaluate_run(run_dir: Path, split: str = "test", device: str = "cpu", data: Path | None = None) -> dict[str, float]:
    """Metrics of a run's best weights on a split; `data`: its dataset moved elsewhere (the
    checksum must still match)."""
    cfg, dataset, model = load_run(run_dir, device, data)
    cfg = cfg.model_copy(update={"device": device})
    trainer = Trainer(cfg, dataset, model, Supervised(dataset.feature_map.task), run_dir, log=lambda s: None,
                      progress=False)
    return trainer.evaluate(split)
