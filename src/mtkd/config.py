"""Pydantic models of the YAML files a user writes (training runs); unknown keys are errors.

The dataset schema lives in `mtkd.data.schema`. Every run saves its resolved config as
`config.yaml`, so a run directory says exactly how it was made.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Optional, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from mtkd.config_io import load_yaml, parse_model, yaml_load
from mtkd.errors import ConfigError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class OptimizerConfig(_Strict):
    """Adam by default; `sparse_lr` is the learning rate of sparse embedding tables (SparseAdam)."""

    name: Literal["adam", "adamw", "sgd", "adagrad"] = "adam"
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    sparse_lr: Optional[float] = Field(None, gt=0)


class TeacherRef(_Strict):
    """A teacher: an mtkd run, a score column of the dataset, or (co-training) a model to train."""

    name: str
    run: Optional[str] = None
    score: Optional[str] = None
    kind: Literal["probability", "logit"] = "probability"
    model: Optional[str] = None
    params: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _one(self) -> "TeacherRef":
        if sum(x is not None for x in (self.run, self.score, self.model)) != 1:
            raise ValueError(f"teacher {self.name!r}: give exactly one of run, score or model")
        if self.params and self.model is None:  # a run's parameters are in its config.yaml
            raise ValueError(f"teacher {self.name!r}: `params` are for a co-trained `model` teacher; a run teacher "
                             "has its own (its config.yaml) and a score column has none: drop params")
        if self.kind != "probability" and self.score is None:  # (saved configs hold the default)
            raise ValueError(f"teacher {self.name!r}: `kind` says what a score column holds (probability or "
                             "logit); a run or model teacher gives logits: drop kind")
        return self


class DistillConfig(_Strict):
    """How the student learns from its teachers: loss = alpha * CE + (1 - alpha) * KD (+ hint)."""

    teachers: list[TeacherRef]
    mode: Literal["offline", "cotrain"] = "offline"
    weighting: str = "average"
    weighting_params: dict[str, Any] = Field(default_factory=dict)
    alpha: float = Field(0.5, ge=0, le=1)
    temperature: float = Field(1.0, gt=0)
    kd_loss: Optional[Literal["bce", "kl", "mse"]] = None
    combine: Literal["mixture", "sum"] = "mixture"
    hint: float = Field(0.0, ge=0, description="weight of hint regression to the teachers' hidden vectors")
    share_embedding: bool = False
    valid_holdout: Optional[float] = Field(
        None, gt=0, lt=1, description="train on train + valid except this fraction of valid, stop on its kd_loss")

    @model_validator(mode="after")
    def _check(self) -> "DistillConfig":
        if not self.teachers:
            raise ValueError("distill.teachers is empty")
        names = [t.name for t in self.teachers]
        if len(set(names)) != len(names):
            raise ValueError(f"teacher names must be unique: {names}")
        for t in self.teachers:
            if self.mode == "offline" and t.model is not None:
                raise ValueError(f"teacher {t.name!r}: `model` teachers are trained in mode: cotrain; "
                                 "offline distillation takes `run` or `score`")
            if self.mode == "cotrain" and t.model is None:
                raise ValueError(f"teacher {t.name!r}: mode cotrain trains teachers from scratch; give `model`")
        if self.valid_holdout is not None and (self.weighting in ("confidence", "best", "policy") or (
                self.weighting == "fixed" and "weights" not in self.weighting_params)):
            what = ("sets its weights from the teachers' AUC on the whole valid split" if self.weighting == "fixed"
                    else "reads the labels (its state holds each teacher's cross-entropy)"
                    if self.weighting == "policy" else "needs labels")
            raise ValueError(f"valid_holdout stops on a slice whose labels no KD target may read; weighting "
                             f"{self.weighting!r} {what} (use average, fixed with weights, learned, gate or single)")
        if self.share_embedding and self.mode != "cotrain":
            raise ValueError("share_embedding makes co-trained teachers and the student share one embedding "
                             "table; offline teachers were trained with their own: use mode: cotrain or drop it")
        if self.hint > 0 and self.mode == "cotrain":
            raise ValueError("hint regression is for offline distillation (it matches the cached hidden vectors "
                             "of run teachers); co-training has none: drop distill.hint")
        if self.hint > 0 and all(t.score is not None for t in self.teachers):
            raise ValueError("hint regression needs a run teacher (it matches a teacher's hidden vector); score "
                             "columns have none: drop distill.hint or add a run teacher")
        if self.kd_loss == "mse" and self.temperature != 1.0:
            raise ValueError("kd_loss mse matches logits as they are: a temperature does not apply; drop "
                             "temperature or use kd_loss bce / kl")
        if self.valid_holdout is not None and self.weighting_params.get("fit_on") == "valid":
            raise ValueError("weighting fit_on: valid would fit on the held-out slice that valid_holdout stops on "
                             "(its labels would shape the KD target it stops by); use one of the two")
        from mtkd.distill.build import check_weighting  # the registry: weightings register on import

        try:
            check_weighting(self.weighting, self.weighting_params)
        except ConfigError as exc:  # as a ValueError pydantic names the file and key around it
            raise ValueError(str(exc)) from None
        pick = self.weighting_params.get("teacher")
        if self.weighting == "single" and isinstance(pick, str) and pick not in names:
            raise ValueError(f"weighting single: no teacher named {pick!r}; the teachers are {names}")
        if self.weighting == "single" and len(self.teachers) > 1 and "teacher" not in self.weighting_params:
            raise ValueError(f"weighting single learns from one of the {len(self.teachers)} teachers: name it "
                             f"with distill.weighting_params.teacher (one of {names}; on the command line "
                             "--set distill.weighting_params.teacher=NAME)")
        return self


class TrainConfig(_Strict):
    """One training run: model, hyper-parameters and the loop's settings."""

    model: str = "dnn"
    params: dict[str, Any] = Field(default_factory=dict)
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig)
    batch_size: int = Field(4096, ge=1)
    eval_batch_size: int = Field(8192, ge=1)  # CIN and attention activations grow with it
    epochs: int = Field(10, ge=1, description="maximum number of epochs")
    eval_every: int = Field(0, ge=0, description="evaluate every N steps; 0 = at each epoch's end")
    monitor: str = Field("auto", description="auto = valid.auc (binary) or valid.accuracy (multi-class)")
    patience: int = Field(2, ge=1, description="evaluations without improvement before stopping")
    min_delta: float = Field(0.0, ge=0)
    lr_patience: int = Field(1, ge=0, description="evaluations without improvement before the LR drops")
    lr_factor: float = Field(0.1, gt=0, lt=1)
    min_lr: float = Field(1e-6, ge=0)
    seed: int = 2026
    device: str = Field("auto", description="auto, cpu, cuda or cuda:N")
    amp: Literal["none", "bf16", "auto"] = Field(
        "none", description="bf16 autocast; auto = bf16 where the chip computes it natively (CUDA bf16, "
                            "CPU AVX-512 BF16 / AMX), fp32 elsewhere")
    data_on_device: Union[bool, Literal["auto"]] = Field(
        "auto", description="keep the training split (and cached teacher outputs) on the device and gather "
                            "batches there; auto = on a GPU when they take under half its free memory")
    grad_clip: Optional[float] = Field(None, gt=0)
    output_prior: bool = Field(
        True, description="start the output bias at the training labels' log-odds (class log-frequencies): "
                          "the first epochs learn the data, not the base rate; false = the layer's own init")
    init_from: Optional[str] = Field(
        None, description="a run directory on the same dataset: start from its best weights wherever names and "
                          "shapes match (NFM's FM pre-training, a student from a teacher's embeddings)")
    word_vectors: dict[str, str] = Field(
        default_factory=dict, description="text field -> GloVe / word2vec / fastText text file: its vocabulary's "
                                          "rows start from these vectors (params.embedding_dim must match)")
    train_fraction: Optional[float] = Field(
        None, gt=0, le=1, description="train on this seeded fraction of the training rows (learning curves, "
                                      "a deliberately weak teacher)")
    distill: Optional[DistillConfig] = None

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        from mtkd.train.device import DEVICE_NAME

        if not DEVICE_NAME.fullmatch(v):
            raise ValueError("expected auto, cpu, cuda or cuda:N")
        return v

    @field_validator("init_from")
    @classmethod
    def _absolute_run(cls, v: Optional[str]) -> Optional[str]:
        """Stored resolved: the saved config means the same directory from any working directory."""
        return None if v is None else str(Path(v).expanduser().resolve())

    @field_validator("word_vectors")
    @classmethod
    def _absolute_files(cls, v: dict[str, str]) -> dict[str, str]:
        return {k: str(Path(p).expanduser().resolve()) for k, p in v.items()}

    @model_validator(mode="after")
    def _check(self) -> "TrainConfig":
        if self.monitor != "auto" and not self.monitor.startswith(("valid.", "train.")):
            raise ValueError(f"monitor {self.monitor!r} must name a logged quantity such as valid.auc or valid.logloss")
        if self.monitor != "auto":
            from mtkd.train.metrics import metric_mode

            metric_mode(self.monitor)  # a typo (valid.aucc) is refused here, not after the first epoch
            if self.distill is None and self.monitor.split(".", 1)[1].split(".")[0] in ("kd_loss", "kd_loss_avg", "w"):
                raise ValueError(f"monitor {self.monitor!r} is logged by distillation only; this run has no "
                                 "distill section (monitor valid.auc, valid.logloss, ...)")
        if self.distill is not None and self.distill.valid_holdout is not None and \
                self.monitor not in ("valid.kd_loss", "valid.kd_loss_avg"):
            raise ValueError("distill.valid_holdout trains on labelled validation rows, so the run must stop by a "
                             "quantity that reads no label: the KD loss on the held-out slice; set monitor: "
                             "valid.kd_loss (or valid.kd_loss_avg)")
        if self.train_fraction is not None and self.distill is not None and self.distill.valid_holdout is not None:
            raise ValueError("train_fraction and distill.valid_holdout both change the training rows; use one")
        return self


def _set_dotted(d: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    for p in parts[:-1]:
        nxt = d.setdefault(p, {})
        if not isinstance(nxt, dict):
            raise ConfigError(f"--set {key}: {p!r} is not a mapping")
        d = nxt
    d[parts[-1]] = value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """`--set key=value` pairs (dotted keys, YAML values) applied over a config mapping."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected key=value, e.g. --set optimizer.lr=0.01")
        key, raw = item.split("=", 1)
        if not key.strip():
            raise ConfigError(f"--set {item!r}: the key before '=' is empty, e.g. --set optimizer.lr=0.01")
        try:
            value = yaml_load(raw)
        except yaml.YAMLError as e:
            if raw.lstrip().startswith(("[", "{")):  # a list or mapping, not a string with odd characters
                raise ConfigError(f"--set {item!r}: the value is not valid YAML ({getattr(e, 'problem', e)}); "
                                  "a list is written [400, 400], a mapping {lr: 0.01}") from None
            value = raw
        _set_dotted(data, key.strip(), value)
    return data


def load_train_config(path: Optional[Path], overrides: list[str], **fixed: Any) -> TrainConfig:
    """Config from an optional YAML file, then `--set` overrides, then explicit CLI options."""
    data: Any = load_yaml(path) if path is not None else {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a YAML mapping of training keys at the top level, got "
                          f"{type(data).__name__}")
    if {"teachers", "students"} & set(data) and "data" in data:
        raise ConfigError(f"{path}: is an experiment (data, teachers, students), not a training config; "
                          f"run it with `mtkd run {path}`")
    apply_overrides(data, overrides)
    for k, v in fixed.items():
        if v is not None:
            data[k] = v
    source = str(path) if path is not None else "--set/--model options"
    return parse_model(TrainConfig, data, source)


class SynthSource(_Strict):
    """`mtkd data synth` settings of an experiment's built-in data."""

    rows: int = Field(100_000, ge=10)
    seed: int = 0
    task: Literal["binary", "multiclass"] = "binary"
    classes: int = Field(4, ge=2, description="multiclass only")


class DataSource(_Strict):
    """Where an experiment's data comes from: synthetic rows, or raw files with a schema."""

    schema_path: str = Field(alias="schema")
    synth: Optional[SynthSource] = None
    train: list[str] = Field(default_factory=list)
    valid: Optional[str] = None
    test: Optional[str] = None
    split: Optional[list[float]] = None
    ordered: Optional[bool] = None
    dir: Optional[str] = None  # default: <out>/data

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    @model_validator(mode="after")
    def _check(self) -> "DataSource":
        if (self.synth is None) == (not self.train):
            raise ValueError("give either `synth: {rows, seed}` or `train: [files]`")
        return self


def check_dir_name(name: str) -> str:
    """A name that becomes one directory (a run under OUT/teachers|students, a teacher's cache):
    no path separator, not `.` or `..` (`../../x` wrote a run outside OUT)."""
    if name in ("", ".", "..") or any(c in name for c in "/\\\0"):
        raise ValueError(f"{name!r} names a directory of its own, so it cannot be empty, '.' or '..', or "
                         "hold '/' or '\\'")
    return name


class ModelSpec(_Strict):
    """A teacher or student of an experiment; `set` holds any other training key for it alone."""

    name: str  # a directory under OUT/teachers|students
    model: Optional[str] = None
    params: dict[str, Any] = Field(default_factory=dict)
    distill: Optional[dict[str, Any]] = None  # students only: partial DistillConfig; teachers default to all
    set: dict[str, Any] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _one_directory(cls, v: str) -> str:
        return check_dir_name(v)


class StudentBase(_Strict):
    """Settings every student of an experiment shares (each student may override them)."""

    model: str = "dnn"
    params: dict[str, Any] = Field(default_factory=dict)
    set: dict[str, Any] = Field(default_factory=dict)


class ExperimentConfig(_Strict):
    """`mtkd run EXPERIMENT.yaml`: data, teachers, students, seeds."""

    name: str = "experiment"
    out: str = "runs/experiment"
    data: DataSource
    seeds: list[int] = Field(default_factory=lambda: [2026])
    defaults: dict[str, Any] = Field(default_factory=dict)
    student: StudentBase = Field(default_factory=StudentBase)
    teachers: list[ModelSpec] = Field(default_factory=list)
    students: list[ModelSpec] = Field(default_factory=list)
    inference_rows: int = Field(1000, ge=1)
    metrics: list[str] = Field(default_factory=list, description="more test metrics for the report, e.g. "
                                                                   "[accuracy, f1] (MRPC) or [mcc] (CoLA)")
    export: list[str] = Field(default_factory=list, description="models to export to ONNX (first seed's run) "
                                                                 "into OUT/exports/NAME, timed with ONNX Runtime")

    @model_validator(mode="after")
    def _check(self) -> "ExperimentConfig":
        names = [m.name for m in self.teachers + self.students]
        if len(set(names)) != len(names):
            raise ValueError(f"teacher and student names must be unique: {names}")
        unknown = [n for n in self.export if n not in names]
        if unknown:
            raise ValueError(f"export names {unknown} are not teachers or students of this experiment: {names}")
        if not self.seeds:
            raise ValueError("seeds is empty")
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds {self.seeds} repeat a seed: each seed is one run, so a repeat would count "
                             "it twice in the report's mean ± std; list each seed once")
        from mtkd.train.metrics import METRIC_MODES

        known = set(METRIC_MODES) | {"calibration"}  # every quantity a run's summary can hold
        if set(self.metrics) - known:
            raise ValueError(f"metrics {sorted(set(self.metrics) - known)} are not logged; choose from {sorted(known)}")
        for t in self.teachers:
            if t.model is None:
                raise ValueError(f"teacher {t.name!r}: `model` is required")
            if t.distill is not None:
                raise ValueError(f"teacher {t.name!r}: teachers take no `distill`")
        return self


def load_experiment(path: Path) -> ExperimentConfig:
    return parse_model(ExperimentConfig, load_yaml(path), str(path))
