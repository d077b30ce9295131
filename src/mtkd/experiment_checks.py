"""Checks of a whole experiment before anything is prepared or trained: a typo in the last
model's settings was found only at its turn, after the teachers had trained."""

from __future__ import annotations

from typing import Any

from mtkd.config import ExperimentConfig, TrainConfig
from mtkd.errors import ConfigError
from mtkd.train.metrics import logged_metrics


def check_models(cfg: ExperimentConfig, source: str) -> None:
    """An unknown model name, and a shared hyper-parameter that no model of the experiment
    takes (`embeding_dim`, which `RunConfigs._defaults_for` would drop without a word): refused, naming
    the model and the file."""
    from mtkd.models import model_params

    named = [(f"teacher {t.name}", t.model) for t in cfg.teachers if t.model] + \
            [(f"student {s.name}", s.model or cfg.student.model or "dnn") for s in cfg.students]
    takes: dict[str, set[str]] = {}
    for where, m in named:
        try:  # an unknown name: the registry's error, naming the file and the model
            takes[m] = set(model_params(m))
        except ConfigError as exc:
            raise ConfigError(f"{source}: {where}: {exc}") from None
    shared = cfg.defaults.get("params") or {}
    taken = set().union(*takes.values())
    unused = sorted(k for k in shared if k not in taken)
    if unused:
        raise ConfigError(f"{source}: defaults.params {', '.join(map(repr, unused))} is taken by none of "
                          f"the experiment's models ({', '.join(sorted(takes))}); they take: "
                          f"{', '.join(sorted(taken))}")


def check_params_of(configs: dict[tuple[str, str, int], TrainConfig], source: str) -> None:
    """Every model's hyper-parameters (co-trained teachers' included), named and typed: a typo
    was found only at its model's turn, and without the file or the model's name."""
    from mtkd.models import check_params

    for (kind, name, _seed), cfg in configs.items():
        models = [(f"{kind[:-1]} {name}", cfg.model, cfg.params)]
        if cfg.distill is not None and cfg.distill.mode == "cotrain":
            models += [(f"student {name}: co-trained teacher {t.name}", t.model, t.params)
                       for t in cfg.distill.teachers if t.model]
        for where, model, params in models:
            try:
                check_params(model, params)
            except ConfigError as exc:
                raise ConfigError(f"{source}: {where}: {exc}") from None
        d = cfg.distill
        if d is not None and d.weighting == "gate" and d.weighting_params.get("use_features") and \
                cfg.model in NO_EMBEDDING:  # found when the student is built, after the teachers trained
            raise ConfigError(f"{source}: student {name}: weighting gate use_features reads the student's embedded "
                              f"fields; {cfg.model} has none: drop use_features or distil into another model")


NO_EMBEDDING = ("lr",)  # the zoo's one model without a FeatureEmbedding (its weights are per id)


def experiment_schema(cfg: ExperimentConfig, source: str) -> Any:
    """The experiment's schema; a missing or bad one names the experiment file and its key."""
    from mtkd.data.schema import load_schema

    try:
        return load_schema(cfg.data.schema_path)
    except ConfigError as e:
        raise ConfigError(f"{source}: data.schema: {e}") from None


def report_metrics(cfg: ExperimentConfig, source: str) -> tuple[str, ...]:
    """`metrics` for the report's extra columns: each must be one the task logs (`f1` of a
    multi-class task was a column of nan), and one already in the table is not repeated."""
    schema = experiment_schema(cfg, source)
    logged = logged_metrics(schema.task, bool(schema.group))
    wrong = [m for m in cfg.metrics if m not in logged]
    if wrong == ["gauc"] and schema.task == "binary":
        raise ConfigError(f"{source}: metric gauc (AUC per user, averaged) needs a group column: set "
                          f"`group: COLUMN` (e.g. the user id) in {cfg.data.schema_path}, or drop gauc")
    if wrong:
        raise ConfigError(f"{source}: metrics {wrong} are not logged for a {schema.task} task; choose from "
                          f"{', '.join(logged)}")
    shown = ("auc", "logloss") if schema.task == "binary" else ("accuracy", "logloss")
    return tuple(dict.fromkeys(m for m in cfg.metrics if m not in shown))
