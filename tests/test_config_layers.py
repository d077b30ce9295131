"""Every accepted setting reaches the run it names: the layers of an experiment, the devices a
run may move between, and keys that would be accepted yet do nothing (refused instead)."""

from __future__ import annotations

from pathlib import Path

import pytest

from mtkd.config import ExperimentConfig
from mtkd.pipeline import Experiment

REPO = Path(__file__).resolve().parents[1]


def experiment(tmp_path: Path, students: list[dict], log=print, **extra) -> Experiment:
    cfg = {"out": str(tmp_path / "exp"),
           "data": {"schema": str(REPO / "configs/datasets/synthetic.yaml"), "synth": {"rows": 3000, "seed": 1}},
           "defaults": {"params": {"embedding_dim": 4, "hidden_units": [16]}},
           "teachers": [{"name": "deepfm", "model": "deepfm"}, {"name": "fm", "model": "fm"}],
           "students": students, **extra}
    return Experiment(ExperimentConfig.model_validate(cfg), log=log)


def test_distill_keys_of_shared_layers_reach_every_distilling_student(tmp_path):
    exp = experiment(tmp_path, [
        {"name": "a", "distill": {"weighting": "average"}, "set": {"distill": {"alpha": 0.1}}},
        {"name": "b", "distill": {"weighting": "average", "temperature": 3.0}},
        {"name": "plain"},
    ], defaults={"params": {"embedding_dim": 4}, "distill": {"alpha": 0.9}},
        student={"model": "dnn", "set": {"distill": {"temperature": 2.0}}})
    a, b, plain = (exp.student_config(s, 1) for s in exp.cfg.students)
    assert (a.distill.alpha, a.distill.temperature) == (0.1, 2.0)
    assert (b.distill.alpha, b.distill.temperature) == (0.9, 3.0)
    assert plain.distill is None  # inherited distill keys do not make a plain student distil


def test_an_entrys_params_beat_the_shared_student_set(tmp_path):
    exp = experiment(tmp_path, [{"name": "s1", "params": {"dropout": 0.3}}, {"name": "s2"},
                                {"name": "s3", "params": {"dropout": 0.3}, "set": {"params": {"dropout": 0.4}}}],
                     student={"model": "dnn", "set": {"params": {"dropout": 0.1}}})
    assert [exp.student_config(s, 1).params["dropout"] for s in exp.cfg.students] == [0.3, 0.1, 0.4]


def test_cotrained_teachers_take_their_set_params_and_say_what_else_does_not_apply(tmp_path):
    said: list[str] = []
    exp = experiment(tmp_path, [{"name": "co", "distill": {"mode": "cotrain", "teachers": ["fm"]}}], log=said.append)
    exp.cfg.teachers[1].set = {"params": {"embedding_dim": 6}, "optimizer": {"lr": 0.01}}
    for seed in (1, 2):
        cfg = exp.student_config(exp.cfg.students[0], seed)
    assert cfg.distill.teachers[0].params["embedding_dim"] == 6
    assert len(said) == 1 and "['optimizer']" in said[0] and "co-trains teacher fm" in said[0]


@pytest.fixture
def toy_data(tmp_path, toy_csv, toy_schema_file, run_cli) -> Path:
    assert run_cli("data", "prepare", "--schema", toy_schema_file, "--train", toy_csv, "--out", tmp_path / "ds")[0] == 0
    return tmp_path / "ds"


def test_cuda_n_is_a_device_the_config_takes():
    from mtkd.config import TrainConfig
    from mtkd.errors import ConfigError

    assert TrainConfig(device="cuda:1").device == "cuda:1"
    with pytest.raises((ValueError, ConfigError), match="auto, cpu, cuda or cuda:N"):
        TrainConfig(device="gpu")


def test_a_run_resumes_on_another_device(tmp_path, toy_data, run_cli):
    """Where a run trains is not what it learns: a run killed on one machine goes on on another."""
    run = tmp_path / "run"
    args = ("train", "--data", toy_data, "--model", "lr", "--out", run, "--set", "epochs=1")
    assert run_cli(*args, "--device", "auto", "--set", "data_on_device=auto")[0] == 0
    rc, out, err = run_cli(*args, "--device", "cpu", "--set", "data_on_device=false", "--resume")
    assert rc == 0, err
    rc, _, err = run_cli(*args, "--device", "cpu", "--set", "epochs=2", "--resume")
    assert rc == 2 and "different configuration (epochs: 1 -> 2)" in err  # what it learns still counts


@pytest.mark.parametrize("distill, message", [
    ({"teachers": [{"name": "t", "run": "runs/t"}], "share_embedding": True}, "share_embedding"),
    ({"teachers": [{"name": "t", "run": "runs/t", "params": {"embedding_dim": 8}}]}, "`params` are for a co-trained"),
    ({"teachers": [{"name": "t", "run": "runs/t", "kind": "logit"}]}, "`kind` says what a score column holds"),
])
def test_keys_that_would_do_nothing_are_refused(distill, message):
    from mtkd.config import DistillConfig

    with pytest.raises(ValueError, match=message):
        DistillConfig.model_validate(distill)


def test_gate_features_of_a_student_without_embedding_are_refused(tmp_path, toy_data, run_cli):
    assert run_cli("train", "--data", toy_data, "--model", "lr", "--out", tmp_path / "t1", "--set", "epochs=1")[0] == 0
    assert run_cli("train", "--data", toy_data, "--model", "lr", "--out", tmp_path / "t2", "--set", "epochs=1",
                   "--seed", "3")[0] == 0
    rc, _, err = run_cli("distill", "--data", toy_data, "-t", tmp_path / "t1", "-t", tmp_path / "t2", "--model", "lr",
                         "--weighting", "gate", "--set", "distill.weighting_params.use_features=true",
                         "--out", tmp_path / "s", "--set", "epochs=1")
    assert rc == 2 and "use_features reads the student's embedded fields" in err


def test_teachers_are_scored_at_their_own_eval_batch_size(tmp_path, toy_data, run_cli, monkeypatch):
    """eval_batch_size bounds CIN and attention memory: scoring a teacher for distillation used 8192."""
    import mtkd.distill.teachers as teachers

    sizes: list[int] = []
    real = teachers._batch_outputs
    monkeypatch.setattr(teachers, "_batch_outputs", lambda m, d, s, batch_size, *a: sizes.append(batch_size)
                        or real(m, d, s, batch_size, *a))
    assert run_cli("train", "--data", toy_data, "--model", "lr", "--out", tmp_path / "t", "--set", "epochs=1",
                   "--set", "eval_batch_size=128")[0] == 0
    assert run_cli("score", "--data", toy_data, "-t", tmp_path / "t")[0] == 0
    assert sizes and set(sizes) == {128}


def test_runs_saved_with_keys_now_refused_stay_usable_and_reused(tmp_path, toy_data, run_cli):
    """An earlier version accepted `share_embedding` offline, `kind` on a run teacher and `params`
    on it, and ignored them. Its runs must still evaluate, and a resume without those keys (the
    fix the new error asks for) must find the same run, not retrain it."""
    import yaml

    t = tmp_path / "t"
    assert run_cli("train", "--data", toy_data, "--model", "lr", "--out", t, "--set", "epochs=1")[0] == 0
    student = tmp_path / "s"
    args = ("distill", "--data", toy_data, "-t", t, "--model", "lr", "--out", student, "--set", "epochs=1")
    assert run_cli(*args)[0] == 0
    saved = yaml.safe_load((student / "config.yaml").read_text())
    saved["train"]["distill"]["share_embedding"] = True  # as the earlier version saved them
    saved["train"]["distill"]["teachers"][0].update(kind="logit", params={"embedding_dim": 8})
    (student / "config.yaml").write_text(yaml.safe_dump(saved, sort_keys=False))
    assert run_cli("evaluate", student)[0] == 0
    rc, out, err = run_cli(*args, "--resume")
    assert rc == 0 and "already finished" in out + err


def test_a_changed_setting_is_named_down_to_its_key_with_both_values(tmp_path, toy_data, run_cli):
    run = tmp_path / "r"
    args = ("train", "--data", toy_data, "--model", "dnn", "--out", run, "--set", "epochs=1")
    assert run_cli(*args, "--set", "params.hidden_units=[8]")[0] == 0
    rc, _, err = run_cli(*args, "--set", "params.hidden_units=[24]", "--resume")
    assert rc == 2 and "params.hidden_units: [8] -> [24]" in err


def test_set_distill_without_distill_is_refused(tmp_path):
    from mtkd.errors import ConfigError

    exp = experiment(tmp_path, [{"name": "s", "set": {"distill": {"weighting": "average", "alpha": 0.2}}}])
    with pytest.raises(ConfigError, match="set.distill without `distill:` on the entry"):
        exp.student_config(exp.cfg.students[0], 1)


def test_differences_name_each_changed_key_with_its_values():
    from mtkd.train.run import _differences, _without_idle_keys

    old = {"epochs": 1, "params": {"hidden_units": [8]}, "distill": {"teachers": [
        {"name": "fm", "model": "fm", "params": {"embedding_dim": 4}}, {"name": "lr", "model": "lr", "params": {}}]}}
    new = {"epochs": 2, "params": {"hidden_units": [24]}, "distill": {"teachers": [
        {"name": "fm", "model": "fm", "params": {"embedding_dim": 8}}, {"name": "lr", "model": "lr", "params": {}}]},
        "init_from": "runs/x"}
    assert _differences(old, new) == ["distill.teachers.fm.params.embedding_dim: 4 -> 8", "epochs: 1 -> 2",
                                      "init_from: (not set) -> 'runs/x'", "params.hidden_units: [8] -> [24]"]
    saved = {"distill": {"mode": "cotrain", "teachers": [{"name": "fm", "model": "fm", "kind": "logit"}]}}
    _without_idle_keys(saved)  # an earlier version took `kind` on a co-trained teacher, and ignored it
    assert saved["distill"]["teachers"][0]["kind"] == "probability"


def test_weights_of_another_form_of_the_model_are_named(tmp_path, toy_data, run_cli):
    """AutoInt with use_wide and dense numerics lost an output input this release: its older runs'
    weights no longer fit, which was a torch size-mismatch traceback."""
    import yaml

    run = tmp_path / "r"
    assert run_cli("train", "--data", toy_data, "--model", "dnn", "--out", run, "--set", "epochs=1",
                   "--set", "params.hidden_units=[8]")[0] == 0
    saved = yaml.safe_load((run / "config.yaml").read_text())
    saved["train"]["params"]["hidden_units"] = [9]  # as if the model's form changed under the weights
    (run / "config.yaml").write_text(yaml.safe_dump(saved, sort_keys=False))
    rc, _, err = run_cli("evaluate", run)
    assert rc == 2 and "its weights do not fit the dnn these settings build now" in err and "Traceback" not in err


def test_gate_features_of_an_lr_student_are_refused_before_the_experiment_trains(tmp_path):
    from mtkd.errors import ConfigError

    exp = experiment(tmp_path, [{"name": "s", "model": "lr", "distill": {
        "weighting": "gate", "weighting_params": {"use_features": True}}}])
    with pytest.raises(ConfigError, match="student s: weighting gate use_features"):
        exp.run()
    assert not (tmp_path / "exp" / "teachers").exists()
