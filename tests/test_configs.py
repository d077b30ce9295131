"""The example configs in configs/: every experiment and dataset schema parses, names models that
exist and resolves into valid training configs for each teacher and student."""

from __future__ import annotations

from pathlib import Path

import pytest

from mtkd.config import load_experiment
from mtkd.data.schema import load_schema
from mtkd.models import MODELS
from mtkd.pipeline import Experiment

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("path", sorted((REPO / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_experiment_config_resolves(path: Path) -> None:
    cfg = load_experiment(path)
    load_schema(REPO / cfg.data.schema_path)
    exp = Experiment(cfg, str(path), log=lambda s: None)
    known = set(MODELS)
    for t in cfg.teachers:
        assert t.model in known
        exp.teacher_config(t, cfg.seeds[0])
    for s in cfg.students:
        tc = exp.student_config(s, cfg.seeds[0])
        assert tc.model in known
    for f in (cfg.data.train or []) + [cfg.data.test or "", cfg.data.valid or ""]:
        assert not f or f.startswith("../shared/data/"), f"{path.name}: {f} is not under ../shared/data"


@pytest.mark.parametrize("path", sorted((REPO / "configs" / "datasets").glob("*.yaml")), ids=lambda p: p.name)
def test_dataset_schema_loads(path: Path) -> None:
    assert load_schema(path).features


def test_set_without_its_section_names_the_full_key() -> None:
    """`--set weighting_params.teacher=x` (the section left out) is told where the key lives."""
    from mtkd.config import load_train_config
    from mtkd.errors import ConfigError

    with pytest.raises(ConfigError) as info:
        load_train_config(None, ["weighting_params.teacher=deepfm", "lr=0.1", "lrr=1"])
    msg = str(info.value)
    assert msg.startswith("--set/--model options: invalid train config:")
    assert "weighting_params: unknown key here; it belongs to a section: distill.weighting_params" in msg
    assert "lr: unknown key here; it belongs to a section: optimizer.lr" in msg
    assert "lrr: unknown key (remove it or check its spelling)" in msg


def test_paths_in_a_train_config_are_stored_resolved(tmp_path, monkeypatch) -> None:
    """A run's saved config.yaml names the same init_from / word-vector files from any directory."""
    from mtkd.config import load_train_config

    monkeypatch.chdir(tmp_path)
    cfg = load_train_config(None, ["init_from=runs/teacher", "word_vectors.text=glove.txt"])
    assert cfg.init_from == str(tmp_path.resolve() / "runs" / "teacher")
    assert cfg.word_vectors == {"text": str(tmp_path.resolve() / "glove.txt")}
