"""Turn a run's `distill:` config into an objective (offline KD or co-training)."""

from __future__ import annotations

from typing import Any, Callable

from mtkd.config import DistillConfig, TrainConfig
from mtkd.data.store import Dataset
from mtkd.distill.objectives import CoTraining, Distillation
from mtkd.distill.teachers import TeacherSet, TeacherSpec, score_teachers
from mtkd.distill.policy import HIDDEN_PROJ  # importing it registers the policy weighting
from mtkd.distill.weighting import build_weighting, check_weighting  # noqa: F401 (re-exported)
from mtkd.errors import ConfigError
from mtkd.models import build_model
from mtkd.models.base import CTRModel
from mtkd.train.objectives import Objective, Supervised


def _weighting_params(d: DistillConfig, names: list[str], dataset: Dataset, model: CTRModel,
                      teacher_scores: Callable[[], list[float]],
                      teacher_hidden_dims: Callable[[], list[int]] = lambda: []) -> dict[str, Any]:
    params = dict(d.weighting_params)
    fmap = dataset.feature_map
    if d.weighting == "single":
        t = params.get("teacher", 0)
        if isinstance(t, str):
            if t not in names:
                raise ConfigError(f"weighting single: teacher {t!r} is not among {names}")
            params["teacher"] = names.index(t)
    if d.weighting == "fixed" and "weights" not in params:
        params["teacher_scores"] = teacher_scores()
    if d.weighting == "policy":
        hidden = teacher_hidden_dims()
        p = 1 if fmap.task == "binary" else fmap.output_dim
        params["hidden_dims"] = hidden
        params["num_classes"] = p
        params["kd_loss"], params["kd_temperature"] = d.kd_loss, d.temperature  # reward ce_kd
    if d.weighting == "gate":
        params["num_classes"] = fmap.output_dim
        if params.get("use_features"):
            if not hasattr(model, "embedding"):
                raise ConfigError(f"weighting gate use_features reads the student's embedded fields; the student "
                                  f"{type(model).__name__} has no embedding (LR): drop use_features or use "
                                  "another student")
            params["feature_dim"] = model.embedding.flat_dim
    return params


def teacher_plan(d: DistillConfig) -> tuple[list[TeacherSpec], bool, int]:
    """The offline teachers and what to cache of them: (specs, hidden vectors?, code width)."""
    specs = [TeacherSpec(t.name, run=t.run, score=t.score, kind=t.kind) for t in d.teachers]
    policy_hidden = d.weighting == "policy" and d.weighting_params.get("use_hidden", True)
    # the policy reads a K-float code of each hidden vector: cache only that, unless hint
    # regression needs the raw vectors (then the policy codes them itself)
    code = int(d.weighting_params.get("hidden_proj", HIDDEN_PROJ)) if policy_hidden and d.hint == 0 else 0
    return specs, d.hint > 0 or policy_hidden, code


def score_offline_teachers(cfg: TrainConfig, dataset: Dataset, device: str = "cpu",
                           log: Callable[[str], None] = print) -> None:
    """Cache what `build_objective` will read of the offline teachers. Under torchrun rank 0 runs
    this before the other ranks build their objectives, which then find the cache instead of
    every rank scoring every teacher over every split at once."""
    d = cfg.distill
    if d is None or d.mode != "offline":
        return
    specs, with_hidden, code = teacher_plan(d)
    score_teachers(dataset, specs, with_hidden=with_hidden, device=device, log=log, hidden_code=code)


def build_objective(cfg: TrainConfig, dataset: Dataset, model: CTRModel, device: str = "cpu",
                    log: Callable[[str], None] = print) -> Objective:
    task = dataset.feature_map.task
    d = cfg.distill
    if d is None:
        return Supervised(task)
    names = [t.name for t in d.teachers]
    if len(names) == 1 and d.weighting not in ("average", "single", "policy"):  # policy still selects or skips
        log(f"warning: distill.weighting {d.weighting} over one teacher ({names[0]}) gives it weight 1 on "
            "every row, as `average` does; it weighs teachers against each other, so give it two or more")
    common = dict(alpha=d.alpha, temperature=d.temperature, kd=d.kd_loss, combine=d.combine,
                  gate_features=bool(d.weighting_params.get("use_features", False)))
    if d.mode == "cotrain":
        if d.weighting_params.get("fit_on", "train") != "train":
            raise ConfigError("weighting fit_on: valid is for offline distillation (co-trained teachers "
                              "have no outputs on validation rows during training); drop fit_on")
        teachers = {t.name: build_model(t.model, dataset.feature_map, **t.params) for t in d.teachers}
        if cfg.output_prior:
            from mtkd.train.run import prior_batch

            freqs, batch = dataset.label_frequencies(), prior_batch(dataset)  # one gather for every teacher
            for teacher in teachers.values():
                teacher.init_output_prior(freqs, batch)
        params = _weighting_params(d, names, dataset, model, lambda: _no_scores(d))
        weighting = build_weighting(d.weighting, len(names), task, **params)
        return CoTraining(task, teachers, weighting, student=model, share_embedding=d.share_embedding, **common)
    specs, with_hidden, code = teacher_plan(d)
    score_teachers(dataset, specs, with_hidden=with_hidden, device=device, log=log, hidden_code=code)
    teacher_set = TeacherSet(dataset, specs, with_hidden=with_hidden, hidden_code=code)
    metric = "auc" if task == "binary" else "accuracy"
    params = _weighting_params(d, names, dataset, model, lambda: teacher_set.metric("valid", metric),
                               teacher_set.hidden_dims)
    if code:
        params["hidden_coded"] = True
    weighting = build_weighting(d.weighting, len(names), task, **params)
    if hasattr(weighting, "fit_projection") and with_hidden:
        # a fixed sample, not the run's seed: the same basis for every seed, so the encoded
        # state is computed once per teacher set and cached (Distillation._encoded_state)
        weighting.fit_projection(teacher_set.hidden("train"), seed=0)
    return Distillation(task, teacher_set, weighting, hint=d.hint, student_hidden_dim=model.hidden_dim, log=log,
                        **common)


def _no_scores(d: DistillConfig) -> list[float]:
    raise ConfigError("weighting fixed in co-training needs explicit `weights` (teachers have no scores yet)")
