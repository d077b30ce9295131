"""The training loop: determinism, early stopping, best-weight restore, resume == uninterrupted."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from mtkd.cli import main
from mtkd.config import load_train_config
from mtkd.data.prepare import prepare
from mtkd.data.schema import load_schema
from mtkd.data.store import Dataset
from mtkd.data.synthetic import write_synthetic
from mtkd.errors import MtkdError
from mtkd.models import build_model
from mtkd.train.objectives import Supervised
from mtkd.train.run import evaluate_run, load_run, train_run
from mtkd.train.trainer import Trainer, configure_torch, seed_everything

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("trainer")
    write_synthetic(root / "s.csv", rows=4000, seed=3)
    schema = load_schema(REPO / "configs/datasets/synthetic.yaml")
    prepare(schema, root / "ds", root / "s.csv")
    return root / "ds"


def cfg(**kw):
    sets = [f"{k}={json.dumps(v)}" for k, v in kw.items()]
    base = ["params.embedding_dim=4", "params.hidden_units=[16,16]", "batch_size=256", "epochs=3",
            "patience=10", "device=cpu"]
    return load_train_config(None, base + sets, model=kw.pop("model", "dnn") if "model" in kw else "dnn")


def metrics_lines(run: Path) -> list[dict]:
    out = []
    for line in (run / "metrics.jsonl").read_text().splitlines():
        d = json.loads(line)
        for k in ("eval_seconds", "train.samples_per_s"):
            d.pop(k, None)
        out.append(d)
    return out


def test_same_seed_same_metrics(data_dir, tmp_path):
    a = train_run(cfg(), data_dir, tmp_path / "a", progress=False, log=lambda s: None)
    b = train_run(cfg(), data_dir, tmp_path / "b", progress=False, log=lambda s: None)
    assert a["valid"] == b["valid"] and a["test"] == b["test"]
    assert metrics_lines(tmp_path / "a") == metrics_lines(tmp_path / "b")
    c = train_run(cfg(seed=7), data_dir, tmp_path / "c", progress=False, log=lambda s: None)
    assert c["valid"]["auc"] != a["valid"]["auc"]


def test_data_on_device_trains_the_same_run(data_dir, tmp_path):
    """data_on_device moves where batches are gathered, not what the run computes (auto stays off on CPU)."""
    a = train_run(cfg(), data_dir, tmp_path / "a", progress=False, log=lambda s: None)
    b = train_run(cfg(data_on_device=True), data_dir, tmp_path / "b", progress=False, log=lambda s: None)
    assert a["valid"] == b["valid"] and a["test"] == b["test"]
    assert metrics_lines(tmp_path / "a") == metrics_lines(tmp_path / "b")
    ds = Dataset(data_dir)
    model = build_model("dnn", ds.feature_map, embedding_dim=4, hidden_units=[8])
    for setting, placed in (("auto", None), (True, torch.device("cpu")), (False, None)):
        t = Trainer(cfg(data_on_device=setting), ds, model, Supervised("binary"), tmp_path / f"t{setting}",
                    progress=False, log=lambda s: None)
        assert t.train_loader.device == placed, setting


def test_summary_fields_and_evaluate(data_dir, tmp_path):
    s = train_run(cfg(), data_dir, tmp_path / "r", progress=False, log=lambda s: None)
    for key in ("valid", "test", "best_epoch", "params", "train_seconds"):
        assert key in s
    assert set(s["test"]) >= {"auc", "logloss"} and 0.5 < s["test"]["auc"] <= 1
    assert (tmp_path / "r" / "config.yaml").exists() and (tmp_path / "r" / "best.pt").exists()
    assert evaluate_run(tmp_path / "r", "test") == pytest.approx(s["test"])


def test_early_stopping_fires_and_restores_best(data_dir, tmp_path):
    # A large learning rate overfits the small training split quickly: valid logloss turns up.
    c = cfg(epochs=30, patience=2, monitor="valid.logloss", lr_patience=0,
            **{"optimizer.lr": 0.05, "params.hidden_units": [64, 64]})
    s = train_run(c, data_dir, tmp_path / "es", progress=False, log=lambda s: None)
    assert s["stopped_early"] and s["epochs_run"] < 30
    assert s["epochs_run"] == s["best_epoch"] + 2
    lines = metrics_lines(tmp_path / "es")
    best_line = min(lines, key=lambda d: d["valid.logloss"])
    assert best_line["epoch"] == s["best_epoch"]
    # the weights at the end are the best epoch's, not the last one's
    assert s["valid"]["logloss"] == pytest.approx(best_line["valid.logloss"], rel=1e-6)
    assert s["valid"]["logloss"] < lines[-1]["valid.logloss"]


def test_lr_reduced_on_plateau(data_dir, tmp_path):
    c = cfg(epochs=8, patience=8, monitor="valid.logloss", lr_patience=1, lr_factor=0.5,
            **{"optimizer.lr": 0.05})
    train_run(c, data_dir, tmp_path / "lr", progress=False, log=lambda s: None)
    lrs = [d["lr"] for d in metrics_lines(tmp_path / "lr")]
    assert lrs[0] == 0.05 and min(lrs) < 0.05


class _Interrupt(Supervised):
    """Raises KeyboardInterrupt (what Ctrl-C does) in the middle of an epoch."""

    def __init__(self, task: str, at_step: int):
        super().__init__(task)
        self.at_step = at_step

    def after_step(self, model, batch, out, step):
        if step + 1 == self.at_step:
            raise KeyboardInterrupt


def test_resume_equals_uninterrupted(data_dir, tmp_path):
    c = cfg(epochs=4, **{"params.dropout": 0.2})  # dropout: the RNG state must be restored too
    full = train_run(c, data_dir, tmp_path / "full", progress=False, log=lambda s: None)

    run = tmp_path / "cut"
    ds = Dataset(data_dir)
    steps_per_epoch = -(-ds.split("train").rows // c.batch_size)
    configure_torch()
    seed_everything(c.seed)
    from mtkd.train.run import build_run_model, run_config_dict

    model = build_run_model(c, ds)
    import yaml

    run.mkdir()
    (run / "config.yaml").write_text(yaml.safe_dump(run_config_dict(c, ds), sort_keys=False))
    trainer = Trainer(c, ds, model, _Interrupt("binary", 2 * steps_per_epoch + 3), run,
                      log=lambda s: None, progress=False)
    with pytest.raises(KeyboardInterrupt):
        trainer.fit()
    assert len(metrics_lines(run)) == 2  # two finished epochs logged
    resumed = train_run(c, data_dir, run, resume=True, progress=False, log=lambda s: None)
    assert resumed["valid"] == full["valid"] and resumed["test"] == full["test"]
    assert metrics_lines(run) == metrics_lines(tmp_path / "full")
    _, _, m1 = load_run(tmp_path / "full")
    _, _, m2 = load_run(run)
    for (k, a), (_, b) in zip(m1.state_dict().items(), m2.state_dict().items()):
        assert torch.equal(a, b), k


def test_eval_every_steps(data_dir, tmp_path):
    from mtkd.report_plots import _curve

    summary = train_run(cfg(epochs=2, eval_every=5), data_dir, tmp_path / "steps", progress=False, log=lambda s: None)
    lines = metrics_lines(tmp_path / "steps")
    assert [d["step"] for d in lines][:3] == [5, 10, 15]
    # the evaluation whose weights were kept, not the last one of its epoch (the plot's star)
    best = max(lines, key=lambda d: d["valid.auc"])
    assert summary["best_step"] == best["step"]
    steps, values, kept = _curve(tmp_path / "steps", "valid.auc")
    assert steps[kept] == best["step"] and values[kept] == best["valid.auc"]


def test_sparse_embeddings_train(data_dir, tmp_path):
    s = train_run(cfg(epochs=2, **{"params.sparse": True}), data_dir, tmp_path / "sp", progress=False,
                  log=lambda s: None)
    assert s["valid"]["auc"] > 0.6


def test_run_dir_guards(data_dir, tmp_path):
    train_run(cfg(epochs=1), data_dir, tmp_path / "g", progress=False, log=lambda s: None)
    with pytest.raises(MtkdError, match="already holds a finished run"):
        train_run(cfg(epochs=1), data_dir, tmp_path / "g", progress=False, log=lambda s: None)
    with pytest.raises(MtkdError, match="different configuration"):
        train_run(cfg(epochs=2), data_dir, tmp_path / "g", resume=True, progress=False, log=lambda s: None)
    train_run(cfg(epochs=2), data_dir, tmp_path / "g", force=True, progress=False, log=lambda s: None)


def test_cli_train_evaluate_models(data_dir, tmp_path, capsys):
    rc = main(["train", "--data", str(data_dir), "--model", "deepfm", "--set", "params.embedding_dim=4",
               "--set", "epochs=1", "--out", str(tmp_path / "cli"), "--quiet"])
    assert rc == 0
    assert json.loads((tmp_path / "cli" / "summary.json").read_text())["model"] == "deepfm"
    capsys.readouterr()
    assert main(["evaluate", str(tmp_path / "cli"), "--split", "valid", "--json"]) == 0
    want = json.loads(capsys.readouterr().out)
    import shutil

    shutil.copytree(tmp_path / "cli", tmp_path / "moved")  # as a run whose dataset was moved
    saved = yaml.safe_load((tmp_path / "moved" / "config.yaml").read_text())
    (tmp_path / "moved" / "config.yaml").write_text(yaml.safe_dump({**saved, "data": str(tmp_path / "gone")}))
    assert main(["evaluate", str(tmp_path / "moved"), "--split", "valid", "--json"]) == 2
    assert "is not there any more" in capsys.readouterr().err
    assert main(["evaluate", str(tmp_path / "moved"), "--split", "valid", "--json", "--data", str(data_dir)]) == 0
    assert json.loads(capsys.readouterr().out) == want
    assert main(["evaluate", str(tmp_path / "cli"), "--device", "tpu"]) == 2
    assert "--device tpu: expected auto, cpu, cuda or cuda:N" in capsys.readouterr().err
    assert main(["models", "--data", str(data_dir)]) == 0
    listing = " ".join(capsys.readouterr().out.split())
    assert "xdeepfm" in listing and "text_cnn" in listing and "not for this data" in listing  # no text field
    assert "AutoInt+: AutoInt" in listing  # a module with two models describes each by its class
    assert "a DNN side by side on the flat embedding." in listing  # whole sentences, not cut mid-word
    assert "with `share_embedding: ITEM`" in listing  # why a model does not fit, in full
    assert main(["models", "--data", str(data_dir), "--set", "embedding_dim=8", "--set", "hidden_units=[64]"]) == 0
    listing = capsys.readouterr().out
    assert "unknown hyper-parameter" not in listing  # LR and FM take no MLP: not "not for this data"
    assert main(["models", "--set", "embeding_dim=4"]) == 2
    assert "--set embeding_dim: no model takes it" in capsys.readouterr().err
    for bad, why in (("embedding_dim=abc", "unable to parse string as an integer"), ("dropout=1.5", "must be in [0, 1)")):
        assert main(["models", "--set", bad]) == 2  # was every model "not for this data", and exit 0
        assert why in " ".join(capsys.readouterr().err.split())
    rc = main(["train", "--data", str(data_dir), "--model", "nope", "--out", str(tmp_path / "x")])
    assert rc == 2 and "unknown model 'nope'" in capsys.readouterr().err
    rc = main(["train", "--data", str(data_dir), "--set", "epochz=3", "--out", str(tmp_path / "y")])
    assert rc == 2 and "epochz" in capsys.readouterr().err
    for value, needle in [("params.dropout=abc", "params.dropout = 'abc': Input should be a valid number"),
                          ("params.hidden_units=32", "params.hidden_units = 32"),
                          ("params.embedding_dim=1.5", "params.embedding_dim = 1.5: Input should be a valid integer"),
                          ("monitor=valid.aucc", "metric 'valid.aucc' has no known direction"),
                          ("monitor=valid.kd_loss", "is logged by distillation only")]:  # was: after an epoch
        rc = main(["train", "--data", str(data_dir), "--model", "deepfm", "--set", value, "--out", str(tmp_path / "z")])
        assert rc == 2 and needle in capsys.readouterr().err
        assert not (tmp_path / "z").exists()  # nothing left that would ask for --resume


def test_resume_from_a_mismatched_checkpoint_is_a_clear_error(tmp_path):
    """A last.pt whose layout no longer matches (written by another version): name the file and
    the fix, never a bare torch error."""
    from mtkd.data.synthetic import write_synthetic
    from mtkd.errors import MtkdError
    from mtkd.train.checkpoint import load_checkpoint, save_checkpoint

    write_synthetic(tmp_path / "s.csv", rows=600, seed=3)
    prepare(load_schema(Path(__file__).resolve().parents[1] / "configs/datasets/synthetic.yaml"), tmp_path / "ds",
            tmp_path / "s.csv")
    cfg = load_train_config(None, ["params.embedding_dim=4", "params.hidden_units=[8]", "batch_size=128",
                                   "epochs=2", "device=cpu"], model="dnn")
    train_run(cfg, tmp_path / "ds", tmp_path / "r", progress=False, log=lambda s: None)
    ck = load_checkpoint(tmp_path / "r" / "last.pt")
    ck["model"] = {k.replace("mlp.", "old_mlp."): v for k, v in ck["model"].items()}
    save_checkpoint(tmp_path / "r" / "last.pt", ck)
    (tmp_path / "r" / "summary.json").unlink()
    with pytest.raises(MtkdError, match="last.pt: cannot resume from it"):
        train_run(cfg, tmp_path / "ds", tmp_path / "r", resume=True, progress=False, log=lambda s: None)


def test_train_fraction_trains_on_a_seeded_subset(tmp_path):
    from mtkd.data.merged import SubsetDataset
    from mtkd.data.synthetic import write_synthetic

    write_synthetic(tmp_path / "s.csv", rows=3000, seed=4)
    prepare(load_schema(Path(__file__).resolve().parents[1] / "configs/datasets/synthetic.yaml"), tmp_path / "ds",
            tmp_path / "s.csv")
    ds = Dataset(tmp_path / "ds")
    sub = SubsetDataset(ds, 0.1, seed=1)
    n = ds.split("train").rows
    assert 0.05 * n < sub.split("train").rows < 0.15 * n
    assert sub.split("valid").rows == ds.split("valid").rows
    idx = sub.row_map("train")[0][1]
    assert np.array_equal(sub.split("train").arrays["label"], np.asarray(ds.split("train").arrays["label"])[idx])
    assert np.array_equal(idx, SubsetDataset(ds, 0.1, seed=1).row_map("train")[0][1])  # same rows every run
    base = ["params.embedding_dim=4", "params.hidden_units=[8]", "batch_size=64", "epochs=1", "device=cpu"]
    train_run(load_train_config(None, base, model="dnn"), tmp_path / "ds", tmp_path / "full",
              progress=False, log=lambda s: None)
    part = train_run(load_train_config(None, base + ["train_fraction=0.1"], model="dnn"), tmp_path / "ds",
                     tmp_path / "part", progress=False, log=lambda s: None)
    steps = lambda d: json.loads((d / "metrics.jsonl").read_text().splitlines()[-1])["step"]  # noqa: E731
    assert steps(tmp_path / "part") < 0.2 * steps(tmp_path / "full")
    assert part["dataset_checksum"].endswith("+train0.1") and "test" in part


def test_amp_auto_follows_the_chip(tmp_path):
    from mtkd.data.synthetic import write_synthetic
    from mtkd.train.device import native_bf16

    flags = Path("/proc/cpuinfo").read_text().split() if Path("/proc/cpuinfo").exists() else []
    assert native_bf16(torch.device("cpu")) == ("avx512_bf16" in flags or "amx_bf16" in flags)
    write_synthetic(tmp_path / "s.csv", rows=800, seed=2)
    prepare(load_schema(Path(__file__).resolve().parents[1] / "configs/datasets/synthetic.yaml"), tmp_path / "ds",
            tmp_path / "s.csv")
    base = ["params.embedding_dim=4", "params.hidden_units=[8]", "batch_size=128", "epochs=1", "device=cpu"]
    auto = train_run(load_train_config(None, base + ["amp=auto"], model="dnn"), tmp_path / "ds", tmp_path / "a",
                     progress=False, log=lambda s: None)
    same = train_run(load_train_config(None, base + ["amp=" + ("bf16" if native_bf16(torch.device("cpu")) else "none")],
                                       model="dnn"), tmp_path / "ds", tmp_path / "b", progress=False, log=lambda s: None)
    assert auto["test"] == same["test"]
    logs: list[str] = []
    train_run(load_train_config(None, base + ["amp=bf16"], model="dnn"), tmp_path / "ds", tmp_path / "c",
              progress=False, log=logs.append)
    warned = any("amp: bf16" in line and "emulates" in line for line in logs)
    assert warned == (not native_bf16(torch.device("cpu")))  # forced bf16 where it is emulated says so


def test_resume_accepts_a_config_written_before_a_new_option(tmp_path):
    """A setting added later (here: train_fraction) at its default does not make a run 'changed'."""
    import yaml

    from mtkd.data.synthetic import write_synthetic

    write_synthetic(tmp_path / "s.csv", rows=600, seed=2)
    prepare(load_schema(Path(__file__).resolve().parents[1] / "configs/datasets/synthetic.yaml"), tmp_path / "ds",
            tmp_path / "s.csv")
    cfg = load_train_config(None, ["params.embedding_dim=4", "params.hidden_units=[8]", "batch_size=128",
                                   "epochs=1", "device=cpu"], model="dnn")
    first = train_run(cfg, tmp_path / "ds", tmp_path / "r", progress=False, log=lambda s: None)
    saved = yaml.safe_load((tmp_path / "r" / "config.yaml").read_text())
    del saved["train"]["train_fraction"]
    (tmp_path / "r" / "config.yaml").write_text(yaml.safe_dump(saved))
    again = train_run(cfg, tmp_path / "ds", tmp_path / "r", resume=True, progress=False, log=lambda s: None)
    assert again == first
    with pytest.raises(Exception, match="different configuration"):
        train_run(load_train_config(None, ["params.embedding_dim=4", "params.hidden_units=[8]", "batch_size=128",
                                           "epochs=2", "device=cpu"], model="dnn"),
                  tmp_path / "ds", tmp_path / "r", resume=True, progress=False, log=lambda s: None)
    # a run written before `output_prior` existed was trained from the layer's own bias: it reads
    # as output_prior false, so the new default does not pass for what that run did
    del saved["train"]["output_prior"]
    (tmp_path / "r" / "config.yaml").write_text(yaml.safe_dump(saved))
    with pytest.raises(MtkdError, match=r"different configuration \(output_prior: False -> True\)"):
        train_run(cfg, tmp_path / "ds", tmp_path / "r", resume=True, progress=False, log=lambda s: None)
    old = cfg.model_copy(update={"output_prior": False})
    assert train_run(old, tmp_path / "ds", tmp_path / "r", resume=True, progress=False, log=lambda s: None) == first


def test_output_prior_starts_at_the_base_rate(data_dir, tmp_path):
    """The output bias starts at the training label rate's log-odds: the untrained model already
    predicts the base rate, and one epoch ends at a lower validation logloss than from p = 0.5."""
    from mtkd.train.run import build_run_model, prior_batch

    ds = Dataset(data_dir)
    rate = ds.label_frequencies()[1]
    torch.manual_seed(0)
    model = build_run_model(cfg(), ds).eval()
    with torch.no_grad():
        p = torch.sigmoid(model(prior_batch(ds)).logits).mean().item()
    assert abs(p - rate) < 0.005 and abs(rate - 0.5) > 0.1
    one = dict(epochs=1, **{"optimizer.lr": 1e-4})  # few small steps: where the start shows
    a = train_run(cfg(**one), data_dir, tmp_path / "prior", progress=False, log=lambda s: None)
    b = train_run(cfg(output_prior=False, **one), data_dir, tmp_path / "zero", progress=False, log=lambda s: None)
    assert a["valid"]["logloss"] < b["valid"]["logloss"] - 0.02


def test_exponent_floats_without_a_dot_are_floats(tmp_path):
    """`1e-5` (YAML 1.2; PyYAML alone reads it as a string) in --set and in config files reaches
    the model and the optimiser as a float."""
    from mtkd.models import build_model

    cfg = load_train_config(None, ["params.embedding_regularizer=1e-5", "optimizer.lr=2e-3"], model="dnn")
    assert cfg.params["embedding_regularizer"] == 1e-5 and cfg.optimizer.lr == 2e-3
    f = tmp_path / "c.yaml"
    f.write_text("model: fm\nparams: {embedding_regularizer: 1E-4, embedding_dim: 4}\n")
    cfg = load_train_config(f, [])
    assert isinstance(cfg.params["embedding_regularizer"], float)
    from mtkd.data.feature_map import CategoricalField, FeatureMap

    fmap = FeatureMap(categorical=(CategoricalField("c", 5),))
    assert build_model("fm", fmap, **cfg.params).embedding_regularizer == 1e-4


def test_ctrl_c_ends_the_command_with_130_and_resume_finishes(data_dir, tmp_path):
    """Ctrl-C on `mtkd train` (a real SIGINT to a real process) exits 130 saying so, never 0, so a
    shell chain `mtkd train ... && mtkd export ...` stops; `--resume` then finishes the run."""
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "mtkd", "train", "--data", str(data_dir), "--model", "dnn", "--quiet",
           "--set", "params.embedding_dim=4", "--set", "params.hidden_units=[16]", "--set", "batch_size=64",
           "--set", "device=cpu", "--set", "epochs=20", "--set", "patience=20", "--out", str(out)]
    job = subprocess.Popen(cmd,
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (out / "last.pt").exists() and time.time() < deadline and job.poll() is None:
        time.sleep(0.1)
    assert job.poll() is None, job.stderr.read()
    job.send_signal(signal.SIGINT)
    assert job.wait(timeout=60) == 130
    assert "interrupted" in job.stderr.read()
    assert not (out / "summary.json").exists()
    done = subprocess.run([*cmd, "--resume"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert json.loads((out / "summary.json").read_text())["epochs_run"] == 20


QUIET = dict(progress=False, log=lambda s: None)


def test_a_diverged_run_fails_without_saving_nan_as_best(data_dir, tmp_path):
    """The loss was checked every 100 steps only (an epoch here has 13) and NaN compared as an
    improvement: the run saved NaN weights as best.pt, or finished with rc 0 and `"best": NaN`."""
    with pytest.raises(MtkdError, match="training loss is nan|training loss is inf"):
        train_run(cfg(**{"optimizer.name": "sgd", "optimizer.lr": 1e6}), data_dir, tmp_path / "nan", **QUIET)
    assert not (tmp_path / "nan" / "best.pt").exists()


def test_lr_plateau_never_raises_the_lr_and_eval_every_covers_the_last_steps(data_dir, tmp_path):
    train_run(cfg(epochs=2, **{"optimizer.lr": 1e-7, "min_delta": 1.0, "lr_patience": 1}), data_dir,
              tmp_path / "low", **QUIET)  # never improves: the LR "drops" at every evaluation
    assert [d["lr"] for d in metrics_lines(tmp_path / "low")] == [1e-7, 1e-7]  # it went up to min_lr (1e-6)
    summary = train_run(cfg(epochs=2, eval_every=1000), data_dir, tmp_path / "ee", **QUIET)  # > the 26 steps
    lines = metrics_lines(tmp_path / "ee")
    assert [d["step"] for d in lines] == [summary["steps"]] and (tmp_path / "ee" / "best.pt").exists()
    assert summary["best_step"] == summary["steps"]


def test_a_missing_valid_split_is_refused_before_training(data_dir, tmp_path):
    import shutil

    shutil.copytree(data_dir, tmp_path / "ds")
    manifest = json.loads((tmp_path / "ds" / "manifest.json").read_text())
    del manifest["splits"]["valid"]
    (tmp_path / "ds" / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(MtkdError, match="monitor valid.auc needs a valid split"):
        train_run(cfg(), tmp_path / "ds", tmp_path / "r", **QUIET)
    assert not (tmp_path / "r").exists()


def test_a_monitor_no_evaluation_logs_is_refused_before_training(data_dir, tmp_path):
    """valid.gauc without a group column, valid.loss of a supervised run: refused after a whole
    epoch, leaving an unfinished run that refused the corrected command ('pass --resume')."""
    for monitor, why in (("valid.gauc", "gauc needs the schema's `group` column"), ("valid.loss", "it logs valid.auc")):
        with pytest.raises(MtkdError, match=rf"monitor '{monitor}' is not logged by this run.*{why}"):
            train_run(cfg(monitor=monitor), data_dir, tmp_path / "r", **QUIET)
        assert not (tmp_path / "r").exists()
    assert train_run(cfg(monitor="valid.logloss", epochs=1), data_dir, tmp_path / "r", **QUIET)["epochs_run"] == 1


def test_resume_needs_neither_the_init_from_run_nor_leaves_partial_writes(data_dir, tmp_path):
    import shutil

    train_run(cfg(epochs=1), data_dir, tmp_path / "src", **QUIET)
    warm = cfg(epochs=2, init_from=str(tmp_path / "src"))
    first = train_run(warm, data_dir, tmp_path / "w", **QUIET)
    (tmp_path / "w" / "summary.json").unlink()  # as if killed before the summary
    (tmp_path / "w" / ".last.pt.k1ll3d.tmp").write_bytes(b"half a checkpoint")  # a save cut by SIGKILL
    shutil.rmtree(tmp_path / "src")  # last.pt holds every weight: the source is not needed
    again = train_run(warm, data_dir, tmp_path / "w", resume=True, **QUIET)
    assert again["test"] == first["test"]
    assert not list((tmp_path / "w").glob(".*.tmp"))


def test_resume_after_a_kill_during_the_summary_write_says_training_had_finished(data_dir, tmp_path):
    """All epochs done, summary.json not yet written: the resume finishes the run (it said
    "resumed at epoch 3" of a 2-epoch run) and gives the uninterrupted summary."""
    cfg = load_train_config(None, ["epochs=2", "batch_size=512", "device=cpu"],
                            model="lr")
    out = tmp_path / "run"
    first = train_run(cfg, data_dir, out, log=lambda s: None, progress=False)
    (out / "summary.json").unlink()
    logs: list[str] = []
    again = train_run(cfg, data_dir, out, resume=True, log=logs.append, progress=False)
    assert any("training had finished (step" in s and "finishing the run" in s for s in logs), logs
    assert not any("at epoch 3" in s for s in logs)
    assert again["test"] == first["test"] and again["best_epoch"] == first["best_epoch"]
