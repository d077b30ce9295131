"""`mtkd run`: the whole path on a tiny experiment, reports, and resuming without redoing work."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from mtkd.cli import main
from mtkd.config import load_experiment
from mtkd.pipeline import Experiment

REPO = Path(__file__).resolve().parents[1]


def _experiment(tmp_path: Path, students: list[dict], **extra) -> Path:
    exp = {**extra,
        "name": "tiny",
        "out": str(tmp_path / "exp"),
        "data": {"schema": str(REPO / "configs/datasets/synthetic.yaml"), "synth": {"rows": 3000, "seed": 1}},
        "seeds": [1, 2],
        "defaults": {"batch_size": 512, "epochs": 2, "device": "cpu",
                     "params": {"embedding_dim": 4, "hidden_units": [16]}},
        "teachers": [{"name": "deepfm", "model": "deepfm"}, {"name": "dcn", "model": "dcn"}],
        "students": students,
    }
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(exp))
    return path


STUDENTS = [
    {"name": "dnn"},
    {"name": "kd_dcn", "distill": {"teachers": ["dcn"], "weighting": "single"}},
    {"name": "kd_gate", "distill": {"weighting": "gate"}, "set": {"monitor": "valid.kd_loss"}},
]


def test_run_writes_report_with_every_model(tmp_path, capsys):
    path = _experiment(tmp_path, STUDENTS + [{"name": "co", "distill": {"mode": "cotrain", "weighting": "average"}}],
                       export=["kd_gate"], metrics=["accuracy", "mcc"])
    assert main(["run", str(path)]) == 0
    out = tmp_path / "exp"
    rows = list(csv.DictReader((out / "report.csv").open()))
    assert [r["model"] for r in rows] == ["deepfm", "dcn", "ensemble", "dnn", "kd_dcn", "kd_gate", "co"]
    assert all(r["seeds"] == "2" for r in rows)
    for r in rows:
        assert 0.5 < float(r["test_auc"]) <= 1 and float(r["test_auc_std"]) >= 0
        assert float(r["ms_per_1000_rows"]) > 0 and int(r["params"]) > 0
        assert 0.5 < float(r["test_accuracy"]) <= 1 and -1 <= float(r["test_mcc"]) <= 1  # `metrics:` columns
    _check_ensemble_row(out, rows)
    _check_plots_and_html(out)
    kept = {p: p.stat().st_mtime_ns for p in (out / "ensemble").glob("seed*.json")}
    assert len(kept) == 2
    assert main(["run", str(path)]) == 0  # the report again: the ensemble is not re-scored
    assert {p: p.stat().st_mtime_ns for p in (out / "ensemble").glob("seed*.json")} == kept
    md = (out / "report.md").read_text()
    assert "test accuracy (mean ± std) | test mcc (mean ± std)" in md
    assert "Bayes-optimal test AUC" in md and "KD single (dcn)" in md and "stop on valid.kd_loss" in md
    test_rows = json.loads((out / "data" / "manifest.json").read_text())["splits"]["test"]["rows"]
    assert test_rows < 1000 and f"one batch of {test_rows:,} test rows" in md and "scaled" in md  # what was timed
    # the exported student: an ONNX model of its first seed's run, timed in ONNX Runtime
    assert [r["model"] for r in rows if r["onnx_ms_per_1000_rows"]] == ["kd_gate"]
    assert float(next(r for r in rows if r["model"] == "kd_gate")["onnx_ms_per_1000_rows"]) > 0
    assert "ONNX ms / 1,000 rows" in md and (out / "exports/kd_gate/model.onnx").exists()
    meta = yaml.safe_load((out / "exports/kd_gate/export.json").read_text())
    assert meta["run"].endswith("students/kd_gate/seed1") and meta["parity"]["max_abs_diff"] < 1e-4
    assert "kd_gate" in capsys.readouterr().out
    # students distil from the teachers of their own seed
    cfg = yaml.safe_load((out / "students/kd_dcn/seed2/config.yaml").read_text())
    assert cfg["train"]["distill"]["teachers"][0]["run"].endswith("teachers/dcn/seed2")


def _check_ensemble_row(out: Path, rows: list[dict]) -> None:
    """The ensemble row is the teachers' probability average, recomputed here per seed with
    scikit-learn; its size and latency are the teachers' sums."""
    from sklearn.metrics import log_loss, roc_auc_score

    from mtkd.data.store import Dataset
    from mtkd.distill.teachers import predict_split
    from mtkd.train.run import load_run

    ds = Dataset(out / "data")
    y = np.asarray(ds.split("test").arrays["label"])
    aucs, lls = [], []
    for seed in (1, 2):
        logits = [predict_split(load_run(out / f"teachers/{t}/seed{seed}")[2], ds, "test")[0] for t in ("deepfm", "dcn")]
        probs = [1 / (1 + np.exp(-z.astype(np.float64))) for z in logits]  # float32 sigmoids tie close rows
        p = np.mean(probs, axis=0)
        aucs.append(roc_auc_score(y, p))
        lls.append(log_loss(y, p))
    by = {r["model"]: r for r in rows}
    ens = by["ensemble"]
    assert ens["kind"] == "ensemble" and ens["best_epoch"] == ""
    assert float(ens["test_auc"]) == pytest.approx(np.mean(aucs), abs=1e-6)
    assert float(ens["test_logloss"]) == pytest.approx(np.mean(lls), abs=1e-5)
    assert int(ens["params"]) == int(by["deepfm"]["params"]) + int(by["dcn"]["params"])
    assert float(ens["ms_per_1000_rows"]) == pytest.approx(
        float(by["deepfm"]["ms_per_1000_rows"]) + float(by["dcn"]["ms_per_1000_rows"]), rel=1e-6)


def _check_plots_and_html(out: Path) -> None:
    """PNG plots that decode, the gate's teacher weights in results.json, and one HTML page
    holding the table and the plots."""
    import base64
    import json

    from matplotlib.image import imread

    for name in ("accuracy_latency", "learning_curves", "teacher_weights"):
        img = imread(out / f"{name}.png")
        assert img.shape[0] > 200 and img.shape[1] > 400 and img.std() > 0.01, name  # drawn, not blank
    results = {r["model"]: r for r in json.loads((out / "results.json").read_text())}
    w = results["kd_gate"]["teacher_weights"]
    assert set(w) == {"deepfm", "dcn"} and sum(w.values()) == pytest.approx(1.0, abs=1e-4)
    assert "teacher_weights" not in results["dnn"] and results["dnn"]["run"].endswith("students/dnn/seed1")
    page = (out / "report.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and page.count("<tr>") == 8  # header + 7 models
    assert "<td>ensemble</td>" in page and "<code>" in page
    first = page.split('src="data:image/png;base64,')[1].split('"')[0]
    assert base64.b64decode(first) == (out / "accuracy_latency.png").read_bytes()
    md = (out / "report.md").read_text()
    assert "![accuracy_latency](accuracy_latency.png)" in md


def test_resume_after_interruption_redoes_nothing(tmp_path, monkeypatch):
    path = _experiment(tmp_path, STUDENTS)
    exp = Experiment(load_experiment(path), str(path), log=lambda s: None)
    import mtkd.train.run as run_mod

    real = run_mod.train_run
    calls: list[str] = []

    def interrupt_on_gate(cfg, data, out, *a, **kw):
        calls.append(str(out))
        if "kd_gate" in str(out):
            raise KeyboardInterrupt
        return real(cfg, data, out, *a, **kw)

    monkeypatch.setattr(run_mod, "train_run", interrupt_on_gate)
    with pytest.raises(KeyboardInterrupt):
        exp.run()
    out = tmp_path / "exp"
    done = sorted(out.glob("*/*/seed*/summary.json"))
    stamps = {p: p.stat().st_mtime_ns for p in done}
    assert len(done) == 2 * 2 + 2 * 2  # teachers and the first two students, both seeds
    monkeypatch.setattr(run_mod, "train_run", real)
    calls.clear()
    rows = Experiment(load_experiment(path), str(path), log=lambda s: None).run()
    assert [r["model"] for r in rows][-1] == "kd_gate"
    assert {p: p.stat().st_mtime_ns for p in done} == stamps  # finished runs were not redone
    teacher_cache = list((out / "data" / "teachers").glob("*-*"))
    assert len(teacher_cache) == 2 * 2  # each teacher of each seed cached once, shared by its students


def test_each_teacher_is_scored_once_for_policy_and_average_students(tmp_path):
    """A policy student reads the teachers' hidden codes, an average student their logits only:
    the teachers are scored once, with the codes, before the first student, and both read it."""
    path = _experiment(tmp_path, [{"name": "kd_avg", "distill": {"weighting": "average"}},
                                  {"name": "kd_pol", "distill": {"weighting": "policy"}}])
    data = yaml.safe_load(path.read_text())
    data["seeds"] = [1]
    path.write_text(yaml.safe_dump(data))
    logs: list[str] = []
    rows = Experiment(load_experiment(path), str(path), log=logs.append).run()
    assert [r["model"] for r in rows] == ["deepfm", "dcn", "ensemble", "kd_avg", "kd_pol"]
    scored = [line.split(":")[0] for line in logs if line.startswith("teacher ") and ": scored" in line]
    assert sorted(scored) == ["teacher dcn", "teacher deepfm"]
    assert sum(": cached" in line for line in logs) == 2 * 2  # each student finds both teachers
    (cache,) = (tmp_path / "exp/data/teachers").glob("dcn-*")
    assert (cache / "train_hidden.npy").exists()

    data["teachers"][1]["set"] = {"epochs": 1}  # dcn retrained: both finished students start over
    path.write_text(yaml.safe_dump(data))
    logs.clear()
    Experiment(load_experiment(path), str(path), log=logs.append).run(rerun_changed=True)
    assert sum("teacher dcn retrained: starting this run over" in line for line in logs) == 2
    reused = [line for line in logs if line.strip().startswith("reused:")]
    assert len(reused) == 1 and "teachers/deepfm" in reused[0] and "--force trains it again" in reused[0]
    scored = [line.split(":")[0] for line in logs if line.startswith("teacher ") and ": scored" in line]
    assert scored == ["teacher dcn"]  # once, with the codes the policy student reads


def test_changed_experiment_is_refused(tmp_path):
    path = _experiment(tmp_path, [{"name": "dnn"}])
    Experiment(load_experiment(path), str(path), log=lambda s: None).run()
    data = yaml.safe_load(path.read_text())
    data["defaults"]["epochs"] = 3
    path.write_text(yaml.safe_dump(data))
    from mtkd.errors import MtkdError

    with pytest.raises(MtkdError, match="settings changed since they ran") as e:  # every changed run, at once
        Experiment(load_experiment(path), str(path), log=lambda s: None).run()
    assert str(e.value).count(": epochs: 2 -> 3\n") == 6  # 2 teachers and a student, 2 seeds each


def test_rerun_changed_starts_over_only_what_changed(tmp_path):
    """`--rerun-changed`: a changed run starts over, and so do the students of a retrained teacher
    (and an export of a retrained run); everything else is reused as it is."""
    from mtkd.errors import MtkdError

    path = _experiment(tmp_path, STUDENTS, export=["kd_dcn"])
    data = yaml.safe_load(path.read_text())
    data["seeds"] = [1]
    path.write_text(yaml.safe_dump(data))
    first = Experiment(load_experiment(path), str(path), log=lambda s: None).run()
    out = tmp_path / "exp"
    runs = {p.parent.parent.name: p for p in out.glob("*/*/seed1/summary.json")}
    assert sorted(runs) == ["dcn", "deepfm", "dnn", "kd_dcn", "kd_gate"]
    stamp = lambda: {n: p.stat().st_mtime_ns for n, p in runs.items()}  # noqa: E731
    export_stamp = lambda: (out / "exports/kd_dcn/model.onnx").stat().st_mtime_ns  # noqa: E731
    before, onnx_before = stamp(), export_stamp()

    data["students"][1]["set"] = {"optimizer": {"lr": 0.003}}  # kd_dcn changes
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(MtkdError, match=r"(?s)settings changed since they ran:\n.*kd_dcn/seed1: optimizer.lr: "
                       r"0.001 -> 0.003\n.*--rerun-changed"):
        Experiment(load_experiment(path), str(path), log=lambda s: None).run()
    logs: list[str] = []
    Experiment(load_experiment(path), str(path), log=logs.append).run(rerun_changed=True)
    after = stamp()
    assert [n for n in runs if after[n] != before[n]] == ["kd_dcn"]
    assert any("settings changed (optimizer.lr: 0.001 -> 0.003): starting this run over" in line for line in logs)
    assert export_stamp() != onnx_before  # the export follows its retrained run

    data["teachers"][1]["set"] = {"epochs": 1}  # the dcn teacher changes: its students follow
    path.write_text(yaml.safe_dump(data))
    runs["kd_gate"].unlink()  # kd_gate as if interrupted: it would resume from a last.pt older than the teacher
    logs.clear()
    Experiment(load_experiment(path).model_copy(update={"students": []}), str(path), log=logs.append).run(
        rerun_changed=True)  # only the teacher: as a run stopped before its students
    logs.clear()
    Experiment(load_experiment(path), str(path), log=logs.append).run(rerun_changed=False)  # plain run: warns
    assert sum("warning: teacher dcn was retrained after this run" in line for line in logs) == 1  # kd_dcn
    # kd_gate, unfinished, is not resumed from epochs it learned from the old teacher
    assert sum("retrained after this unfinished run's last checkpoint: starting it over" in line
               for line in logs) == 1
    assert stamp()["kd_dcn"] == after["kd_dcn"]
    runs["kd_gate"].unlink()  # the plain run started it over and finished it: interrupt it again
    logs.clear()
    rows = Experiment(load_experiment(path), str(path), log=logs.append).run(rerun_changed=True)
    again = stamp()
    assert sorted(n for n in runs if again[n] != after[n]) == ["dcn", "kd_dcn", "kd_gate"]
    assert sum("teacher dcn retrained: starting this run over" in line for line in logs) == 1  # kd_gate resumes
    assert [r["model"] for r in rows] == [r["model"] for r in first]
    same = Experiment(load_experiment(path), str(path), log=lambda s: None).run(rerun_changed=True)
    assert [(r["model"], r["test_auc"]) for r in same] == [(r["model"], r["test_auc"]) for r in rows]
    assert stamp() == again  # nothing left to redo


def test_bad_experiment_config(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"data": {"schema": "x.yaml", "synth": {"rows": 10}},
                                    "students": [{"name": "s", "distil": {}}]}))
    assert main(["run", str(path)]) == 2
    assert "students[0].distil" in capsys.readouterr().err


def test_typos_in_an_experiment_are_refused_before_any_training(tmp_path, capsys):
    """A shared hyper-parameter no model takes, a misspelt weighting or weighting parameter: the
    file and the student are named, and nothing has trained or been written for a run."""
    for change, needle in [(lambda d: d["defaults"]["params"].update(embeding_dim=4),
                            "defaults.params 'embeding_dim' is taken by none of the experiment's models"),
                           (lambda d: d["students"][0].update(distill={"weighting": "averge"}),
                            "student kd: invalid train config"),
                           (lambda d: d["students"][0].update(distill={"weighting": "gate",
                                                                       "weighting_params": {"entropyy": 0.1}}),
                            "takes no parameter(s) 'entropyy'"),
                           # a model's own params, the last student's, a co-trained teacher's: each was found
                           # only at its model's turn, after the teachers had trained, naming neither
                           (lambda d: d["teachers"][1].update(params={"cross_layer": 2}),
                            "teacher dcn: unknown hyper-parameter(s) 'cross_layer' for model 'dcn'"),
                           (lambda d: d["students"].append({"name": "wide", "params": {"dropout": "lots"}}),
                            "student wide: model 'dnn': params.dropout = 'lots'"),
                           (lambda d: d["students"].append({"name": "co", "distill": {
                               "mode": "cotrain", "teachers": ["deepfm"]}}) or
                            d["teachers"][0].update(params={"hidden_unit": [8]}),
                            "teacher deepfm: unknown hyper-parameter(s) 'hidden_unit'"),
                           (lambda d: d["students"].append({"name": "x", "model": "dnm"}),
                            "student x: unknown model 'dnm'")]:
        path = _experiment(tmp_path, [{"name": "kd", "distill": {"weighting": "average"}}])
        data = yaml.safe_load(path.read_text())
        change(data)
        path.write_text(yaml.safe_dump(data))
        assert main(["run", str(path)]) == 2
        err = " ".join(capsys.readouterr().err.split())
        assert needle in err and str(path) in err, err
        assert not (tmp_path / "exp" / "data").exists()  # refused before the data is prepared


def test_export_of_an_unknown_model_is_refused(tmp_path, capsys):
    path = _experiment(tmp_path, STUDENTS, export=["kd_gaet"])
    assert main(["run", str(path)]) == 2
    assert "export names ['kd_gaet']" in capsys.readouterr().err


def test_report_metric_that_is_not_logged_is_refused(tmp_path, capsys):
    path = _experiment(tmp_path, STUDENTS, metrics=["f2"])
    assert main(["run", str(path)]) == 2
    assert "metrics ['f2'] are not logged" in " ".join(capsys.readouterr().err.split())
    path = _experiment(tmp_path, STUDENTS, metrics=["gauc"])  # the synthetic schema has no group column
    assert main(["run", str(path)]) == 2
    assert "metric gauc (AUC per user, averaged) needs a group column: set `group: COLUMN`" in \
        " ".join(capsys.readouterr().err.split())


def test_report_metrics_are_those_of_the_task(tmp_path, capsys):
    """f1 of a multi-class task is not logged (a column of nan); accuracy of one is already the
    table's first metric (it was printed twice)."""
    path = _experiment(tmp_path, [{"name": "dnn"}], metrics=["accuracy", "f1"])
    data = yaml.safe_load(path.read_text())
    data["data"] = {"schema": str(REPO / "configs/datasets/synthetic_multiclass.yaml"),
                    "synth": {"rows": 3000, "seed": 1, "task": "multiclass", "classes": 3}}
    path.write_text(yaml.safe_dump(data))
    assert main(["run", str(path)]) == 2
    assert "metrics ['f1'] are not logged for a multiclass task; choose from accuracy, macro_f1, logloss" in \
        " ".join(capsys.readouterr().err.split())
    data["metrics"], data["seeds"], data["teachers"] = ["accuracy", "macro_f1"], [1], data["teachers"][:1]
    path.write_text(yaml.safe_dump(data))
    assert main(["run", str(path)]) == 0
    header = next(csv.reader((tmp_path / "exp" / "report.csv").open()))
    assert "test_macro_f1" in header and "test_accuracy" not in header
    data["data"]["synth"]["classes"] = 5  # other data in the same `out`: refused, not reused
    path.write_text(yaml.safe_dump(data))
    assert main(["run", str(path)]) == 2
    assert "holds synthetic data made with" in capsys.readouterr().err
    data["data"]["synth"] = {"rows": 3000, "sed": 1}  # a misspelt synth key
    path.write_text(yaml.safe_dump(data))
    assert main(["run", str(path)]) == 2
    assert "synth.sed" in capsys.readouterr().err


def test_run_refuses_torchrun(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main(["run", str(_experiment(tmp_path, STUDENTS))]) != 0
    assert "under torchrun start `mtkd train` per model" in capsys.readouterr().err.replace("\n", " ")


def test_repeated_seeds_are_refused(tmp_path):
    """seeds [1, 1] trained one run and counted it twice: a report with ± 0.0000."""
    from mtkd.errors import ConfigError

    path = _experiment(tmp_path, [{"name": "dnn"}])
    path.write_text(yaml.safe_dump({**yaml.safe_load(path.read_text()), "seeds": [1, 1]}))
    with pytest.raises(ConfigError, match=r"repeat a seed"):
        load_experiment(path)


def test_run_prepares_changed_raw_files_again(tmp_path):
    """A raw file touched (or copied without cp -p) is prepared again, without --force (which
    `mtkd run` never passed on: only deleting OUT/data helped); the same data comes out, so every
    run and the teacher's cached outputs are reused. An edited file gives other data: the runs
    are refused as changed, and `--rerun-changed` trains them again."""
    import os

    from mtkd.data.synthetic import write_synthetic
    from mtkd.errors import MtkdError

    raw = tmp_path / "raw.csv"
    write_synthetic(raw, 2000, seed=3)
    path = _experiment(tmp_path, [{"name": "dnn"}, {"name": "kd", "distill": {"weighting": "average"}}])
    data = yaml.safe_load(path.read_text())
    data.update(seeds=[1], teachers=data["teachers"][:1], data={"schema": data["data"]["schema"],
                                                                 "train": [str(raw)]})
    path.write_text(yaml.safe_dump(data))
    Experiment(load_experiment(path), str(path), log=lambda s: None).run()
    caches = sorted(p.name for p in (tmp_path / "exp" / "data").glob("teachers/*"))
    assert caches
    st = raw.stat()
    os.utime(raw, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    lines: list[str] = []
    rows = Experiment(load_experiment(path), str(path), log=lines.append).run()
    assert [r["model"] for r in rows] == ["deepfm", "dnn", "kd"]
    assert any("preparing it again" in x for x in lines) and sum("reused:" in x for x in lines) == 3, lines
    assert sorted(p.name for p in (tmp_path / "exp" / "data").glob("teachers/*")) == caches
    raw.write_text(raw.read_text().replace("\n1,", "\n0,", 50))  # labels edited: other data
    with pytest.raises(MtkdError, match=r"settings changed since it ran \(different configuration: dataset\)"):
        Experiment(load_experiment(path), str(path), log=lambda s: None).run()
    lines.clear()
    Experiment(load_experiment(path), str(path), log=lines.append).run(rerun_changed=True)
    assert not any("reused:" in x for x in lines), lines
    rows = Experiment(load_experiment(path), str(path), log=lambda s: None).run(force=True)
    assert [r["model"] for r in rows] == ["deepfm", "dnn", "kd"]


def test_a_changed_student_is_named_before_a_new_teacher_trains(tmp_path):
    """The up-front check read every teacher's weights, so a student of a teacher not trained yet was
    skipped, and refused only after that teacher had trained."""
    from mtkd.errors import MtkdError

    path = _experiment(tmp_path, [{"name": "kd", "distill": {"weighting": "average"}}])
    data = yaml.safe_load(path.read_text())
    data["seeds"], data["teachers"] = [1], data["teachers"][:1]
    path.write_text(yaml.safe_dump(data))
    Experiment(load_experiment(path), str(path), log=lambda s: None).run()
    data["teachers"].append({"name": "dcn", "model": "dcn"})
    data["students"][0]["set"] = {"optimizer": {"lr": 0.05}}
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(MtkdError, match=r"kd/seed1: .*optimizer.lr: 0.001 -> 0.05"):
        Experiment(load_experiment(path), str(path), log=lambda s: None).run()
    assert not (tmp_path / "exp" / "teachers" / "dcn").exists()
