"""How an experiment's layers resolve into each run's training config: `defaults`, then
`student` (or a teacher's own entry), then the entry's `params` and `set` (README, Experiments)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Callable

from mtkd.config import ExperimentConfig, ModelSpec, TrainConfig
from mtkd.config_io import parse_model
from mtkd.errors import ConfigError


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else copy.deepcopy(v)
    return out


class RunConfigs:
    """The TrainConfig of every teacher and student run of an experiment, per seed."""

    def __init__(self, cfg: ExperimentConfig, source: str, log: Callable[[str], None],
                 run_dir: Callable[[str, str, int], Path]):
        self.cfg, self.source, self.log, self.run_dir = cfg, source, log, run_dir
        self._said: set[tuple[str, str]] = set()  # warnings given once, not once per seed

    def _defaults_for(self, model: str) -> dict[str, Any]:
        """`defaults`, keeping only the shared hyper-parameters this model takes (LR has no MLP);
        a model's own `params` stay strict."""
        from mtkd.models import model_params

        d = copy.deepcopy(self.cfg.defaults)
        if "params" in d:
            valid = set(model_params(model))
            d["params"] = {k: v for k, v in d["params"].items() if k in valid}
        return d

    def teacher(self, t: ModelSpec, seed: int) -> TrainConfig:
        d = _merge(self._defaults_for(t.model or ""), {"model": t.model, "params": t.params})
        d = _merge(d, t.set)
        d["seed"] = seed
        d.pop("distill", None)
        return parse_model(TrainConfig, d, f"{self.source}: teacher {t.name}")

    def student(self, s: ModelSpec, seed: int) -> TrainConfig:
        """The layers, each over the one before: `defaults`, `student.params`, `student.set`, the
        entry's `params`, the entry's `set`. `distill` keys from the shared layers (`defaults`,
        `student.set`) go to every distilling student under its own `distill`, and the entry's
        `set.distill` over that; a student without `distill:` trains without teachers."""
        base = self.cfg.student
        model = s.model or base.model or "dnn"
        shared = _merge(_merge(self._defaults_for(model), {"model": model, "params": base.params}), base.set)
        if s.distill is None and s.set.get("distill"):  # it would train without teachers, in silence
            raise ConfigError(f"{self.source}: student {s.name}: set.distill without `distill:` on the entry; a "
                              "student distils when its entry has `distill:` (put these keys there)")
        d = _merge(_merge(shared, {"params": s.params}), s.set)
        d.pop("distill", None)
        d["seed"] = seed
        if s.distill is not None:
            inherited = shared.get("distill") or {}
            d["distill"] = self._distill(s, _merge(_merge(inherited, s.distill), s.set.get("distill") or {}), seed)
        return parse_model(TrainConfig, d, f"{self.source}: student {s.name}")

    def _distill(self, s: ModelSpec, dist: dict[str, Any], seed: int) -> dict[str, Any]:
        dist = copy.deepcopy(dist)
        by_name = {t.name: t for t in self.cfg.teachers}
        names = dist.get("teachers", "all")
        names = list(by_name) if names == "all" else names
        if not by_name:
            raise ConfigError(f"{self.source}: student {s.name} distils, but the experiment has no `teachers:`; "
                              "add teachers, or drop the student's `distill:`")
        if not isinstance(names, list) or not names:
            raise ConfigError(f"{self.source}: student {s.name}: distill.teachers must be 'all' or a list of names")
        unknown = [n for n in names if n not in by_name]
        if unknown:
            raise ConfigError(f"{self.source}: student {s.name}: unknown teacher(s) {unknown}; "
                              f"teachers are {list(by_name)}")
        if dist.get("mode", "offline") == "cotrain":
            dist["teachers"] = [self._cotrained(s, by_name[n]) for n in names]
        else:
            dist["teachers"] = [{"name": n, "run": str(self.run_dir("teachers", n, seed))} for n in names]
        if dist.get("weighting") == "single" and len(names) == 1:  # of several, the config must name one
            dist.setdefault("weighting_params", {}).setdefault("teacher", names[0])
        return dist

    def _cotrained(self, s: ModelSpec, t: ModelSpec) -> dict[str, Any]:
        """A teacher trained inside the student's run: its model and params (`defaults`, its own,
        its `set.params`). Its other `set` keys (an optimiser, epochs, ...) have no run of their
        own to apply to: the student's run trains it, with the student's optimiser; said, not dropped
        in silence."""
        params = _merge(_merge(self._defaults_for(t.model or "").get("params", {}), t.params),
                        t.set.get("params") or {})
        other = sorted(k for k in t.set if k != "params")
        if other and (s.name, t.name) not in self._said:
            self._said.add((s.name, t.name))
            self.log(f"warning: student {s.name} co-trains teacher {t.name} inside its own run, so the teacher's "
                     f"set: {other} do not apply to it there (the student's settings do); they apply to "
                     f"its own run (offline students)")
        return {"name": t.name, "model": t.model, "params": params}
