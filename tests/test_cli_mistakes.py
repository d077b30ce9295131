"""A user's mistakes at the command line: each one a clear error (exit 2, no traceback) that names
what is wrong and the fix, and none of them destroys an earlier result."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from mtkd.config import load_train_config
from mtkd.data.prepare import prepare
from mtkd.data.schema import load_schema
from mtkd.data.synthetic import write_synthetic
from mtkd.distill.teachers import TeacherSpec
from mtkd.errors import ConfigError
from mtkd.train.run import train_run

REPO = Path(__file__).resolve().parents[1]
SCHEMA = REPO / "configs/datasets/synthetic.yaml"


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    """A prepared dataset `ds` (from s.csv) and a finished LR run `lr` on it."""
    root = tmp_path_factory.mktemp("mistakes")
    write_synthetic(root / "s.csv", rows=2000, seed=1)
    prepare(load_schema(SCHEMA), root / "ds", root / "s.csv")
    train_run(load_train_config(None, ["epochs=1", "batch_size=512", "device=cpu"], model="lr"),
              root / "ds", root / "lr", progress=False, log=lambda s: None)
    return root


def _copy_run(world: Path, tmp_path: Path) -> Path:
    run = tmp_path / "run"
    shutil.copytree(world / "lr", run)
    return run


def test_run_refuses_a_data_dir_that_holds_another_dataset(world, tmp_path, run_cli):
    other = tmp_path / "other"
    shutil.copytree(world / "ds", other)
    before = (other / "manifest.json").read_text()
    exp = tmp_path / "e.yaml"
    exp.write_text(yaml.safe_dump({"out": str(tmp_path / "out"), "seeds": [1],
                                   "data": {"schema": str(SCHEMA), "synth": {"rows": 1000, "seed": 3}, "dir": str(other)},
                                   "defaults": {"epochs": 1}, "teachers": [{"name": "lr", "model": "lr"}],
                                   "students": [{"name": "dnn"}]}))
    rc, _, err = run_cli("run", exp)
    assert rc == 2 and "already holds a different dataset" in err and "--force" in err
    assert (other / "manifest.json").read_text() == before  # the other dataset is still there


def test_predict_never_replaces_a_file_of_the_model_it_scores(world, tmp_path, run_cli):
    run = _copy_run(world, tmp_path)
    weights = (run / "best.pt").read_bytes()
    rc, _, err = run_cli("predict", run, "--input", world / "s.csv", "--out", run / "best.pt")
    assert rc == 2 and "best.pt" in err and "would replace it" in err
    assert (run / "best.pt").read_bytes() == weights
    rc, _, err = run_cli("predict", run, "--input", world / "s.csv", "--out", world / "ds" / "manifest.json")
    assert rc == 2 and "the model's dataset" in err
    rc, _, _ = run_cli("predict", run, "--input", world / "s.csv", "--out", run / "scores.csv")
    assert rc == 0 and (run / "scores.csv").stat().st_size > 0  # a new scores file beside the run is fine


@pytest.mark.parametrize("text", ["garbage: [\n", "- x\n", "train: 3\ndata: x\n"])
def test_a_damaged_run_config_is_named_not_a_traceback(world, tmp_path, run_cli, text):
    run = _copy_run(world, tmp_path)
    (run / "config.yaml").write_text(text)
    for args in (["evaluate", run], ["export", run, "--out", tmp_path / "x"],
                 ["train", "--data", world / "ds", "--model", "lr", "--out", tmp_path / "w", "--set", f"init_from={run}"]):
        rc, _, err = run_cli(*args)
        assert rc == 2 and "config.yaml" in err and "train that run again" in err, (args, err)


def test_wrong_paths_and_values_are_errors_not_tracebacks(world, tmp_path, run_cli):
    (tmp_path / "adir").mkdir()
    rc, _, err = run_cli("data", "synth", "--rows", 10, "--out", tmp_path / "adir")
    assert rc == 2 and "is a directory" in err and not list((tmp_path).glob(".adir*"))
    rc, _, err = run_cli("train", "--data", world / "ds", "--model", "lr", "--out", world / "s.csv")
    assert rc == 2 and "is a file" in err
    rc, _, err = run_cli("train", "--data", world / "ds", "--model", "lr", "--out", tmp_path / "r", "--resume", "--force")
    assert rc == 2 and "pass one of them" in err
    for bad in ("a,b", "0", "", "-4"):
        rc, _, err = run_cli("bench", world / "lr", "--batches", bad)
        assert rc == 2 and "--batches" in err
    broken = tmp_path / "dx"
    shutil.copytree(world / "ds", broken)
    (broken / "manifest.json").write_text("[]")
    rc, _, err = run_cli("data", "info", broken)
    assert rc == 2 and "corrupt manifest" in err
    rc, _, err = run_cli("serve", world / "lr", "--port", 99999)
    assert rc == 2 and "--port" in err
    rc, _, err = run_cli("data", "synth", "--rows", 10, "--classes", 5, "--out", tmp_path / "b.csv")
    assert rc == 2 and "--task multiclass" in err


def test_a_key_given_twice_in_yaml_is_an_error(world, tmp_path, run_cli):
    cfg = tmp_path / "dup.yaml"
    cfg.write_text("model: lr\nepochs: 1\nepochs: 3\n")
    rc, _, err = run_cli("train", "--data", world / "ds", "--config", cfg, "--out", tmp_path / "r")
    assert rc == 2 and "line 3, column 1" in err and "'epochs' is given twice (first on line 2)" in err
    assert not (tmp_path / "r").exists()


def test_a_misspelt_key_is_told_the_key_it_meant():
    with pytest.raises(ConfigError) as e:
        load_train_config(None, ["epocs=1", "optimizer.lrr=0.1"])
    assert "epocs: unknown key; did you mean 'epochs'?" in str(e.value)
    assert "optimizer.lrr: unknown key; did you mean 'lr'?" in str(e.value)


def test_names_that_are_paths_are_refused(tmp_path, run_cli):
    exp = tmp_path / "e.yaml"
    for name in ("../../escaped", "a/b", ".."):
        exp.write_text(yaml.safe_dump({"out": str(tmp_path / "out"), "data": {"schema": str(SCHEMA), "synth": {"rows": 100}},
                                       "students": [{"name": name}]}))
        rc, _, err = run_cli("run", exp)
        assert rc == 2 and "students[0].name" in err, (name, err)
    assert not (tmp_path / "escaped").exists() and not (tmp_path / "out").exists()
    for name in ("../x", "a\\b", ".", ""):
        with pytest.raises(ConfigError, match="cache directory"):
            TeacherSpec(name, run="runs/x")


def test_set_values_and_keys_that_cannot_be_read(world, tmp_path, run_cli):
    rc, _, err = run_cli("train", "--data", world / "ds", "--out", tmp_path / "r", "--set", "params.hidden_units=[1,2")
    assert rc == 2 and "not valid YAML" in err and "[400, 400]" in err
    rc, _, err = run_cli("train", "--data", world / "ds", "--out", tmp_path / "r", "--set", "=3")
    assert rc == 2 and "key before '=' is empty" in err
    rc, out, _ = run_cli("models", "--set", "params.embedding_dim=4")  # `mtkd train`'s spelling
    assert rc == 0 and "dnn" in out
    assert json.loads((world / "lr" / "summary.json").read_text())["test"]["auc"] > 0.5  # the fixture's run is intact


def test_messages_name_the_real_cause(world, tmp_path, run_cli):
    rc, _, err = run_cli("train", "--data", world / "ds", "--config", REPO / "configs/demo.yaml", "--out", tmp_path / "r")
    assert rc == 2 and "is an experiment" in err and "mtkd run" in err
    (tmp_path / "l.yaml").write_text("- x\n")
    rc, _, err = run_cli("train", "--data", world / "ds", "--config", tmp_path / "l.yaml", "--out", tmp_path / "r")
    assert rc == 2 and "expected a YAML mapping" in err
    rc, _, err = run_cli("distill", "--data", world / "ds", "-t", "x=", "--out", tmp_path / "r")
    assert rc == 2 and "no run directory after '='" in err
    rc, _, err = run_cli("distill", "--data", world / "ds", "-t", world / "ds", "--out", tmp_path / "r")
    assert rc == 2 and "is a prepared dataset, not a run" in err
    exp = tmp_path / "e.yaml"
    base = {"out": str(tmp_path / "out"), "data": {"schema": str(SCHEMA), "synth": {"rows": 100}}}
    exp.write_text(yaml.safe_dump({**base, "students": [{"name": "kd", "distill": {"weighting": "average"}}]}))
    rc, _, err = run_cli("run", exp)
    assert rc == 2 and "the experiment has no `teachers:`" in err
    exp.write_text(yaml.safe_dump({**base, "data": {"schema": "nope.yaml", "synth": {"rows": 100}}, "students": [{"name": "dnn"}]}))
    rc, _, err = run_cli("run", exp)
    assert rc == 2 and f"{exp}: data.schema: nope.yaml: file not found" in err


def test_two_synthetic_experiments_share_a_data_dir(tmp_path, run_cli):
    """Each experiment writes its synthetic rows under its own OUT: the same data from other paths."""
    for name in ("a", "b"):
        exp = tmp_path / f"{name}.yaml"
        exp.write_text(yaml.safe_dump({"out": str(tmp_path / name), "seeds": [1], "defaults": {"epochs": 1},
                                       "data": {"schema": str(SCHEMA), "synth": {"rows": 800, "seed": 0},
                                                "dir": str(tmp_path / "shared")},
                                       "students": [{"name": "lr", "model": "lr"}]}))
        rc, _, err = run_cli("run", exp)
        assert rc == 0, err
    checksum = json.loads((tmp_path / "shared" / "manifest.json").read_text())["checksum"]
    other = dict(yaml.safe_load((tmp_path / "b.yaml").read_text()))
    other["data"] = {**other["data"], "synth": {"rows": 900, "seed": 0}}  # another dataset: refused, kept
    (tmp_path / "c.yaml").write_text(yaml.safe_dump({**other, "out": str(tmp_path / "c")}))
    rc, _, err = run_cli("run", tmp_path / "c.yaml")
    assert rc == 2 and "already holds a different dataset" in err and "data.dir" in err
    assert json.loads((tmp_path / "shared" / "manifest.json").read_text())["checksum"] == checksum


def test_yaml_merge_keys_override_and_flow_duplicates_are_caught():
    from mtkd.config_io import yaml_load

    text = "base: &base {lr: 0.1}\nfast: &fast\n  <<: *base\n  lr: 0.5\noptimizer:\n  <<: *fast\n"
    assert yaml_load(text)["optimizer"] == {"lr": 0.5}
    with pytest.raises(yaml.YAMLError, match="'a' is given twice"):
        yaml_load("p: {a: 1, a: 2}")


def test_names_and_outs_that_used_to_work_still_do(world, tmp_path, run_cli):
    TeacherSpec("lr+ln", run="runs/x")
    TeacherSpec("2024-01-01T10:00", run="runs/x")
    run = _copy_run(world, tmp_path)
    for _ in range(2):  # a scores file beside the run, written again
        rc, _, err = run_cli("predict", run, "--input", world / "s.csv", "--out", run / "scores.tsv")
        assert rc == 0, err
    with pytest.raises(ConfigError, match="belongs to a section: distill.mode"):
        load_train_config(None, ["mode=cotrain"])  # not "did you mean 'model'"


def test_a_weighting_over_one_teacher_is_warned(world, tmp_path, run_cli):
    rc, _, err = run_cli("distill", "--data", world / "ds", "-t", world / "lr", "--weighting", "gate",
                         "--set", "epochs=1", "--out", tmp_path / "s", "--quiet")
    assert rc == 0 and "weighting gate over one teacher" in err
