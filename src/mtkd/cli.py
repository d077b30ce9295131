"""The `mtkd` command. User errors print one clear message and exit 2, never a traceback."""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from mtkd import jsonout
from mtkd.cli_data import data_app
from mtkd.cli_exit import run_app, sigterm_as_interrupt
from mtkd.errors import ConfigError, MtkdError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="mtkd: multi-teacher knowledge distillation for CTR prediction and classification.")
app.add_typer(data_app, name="data")
# soft_wrap: a message is one line however long its paths (logs are grepped); tables still fit the width
out, err = Console(soft_wrap=True), Console(stderr=True, soft_wrap=True)


@app.command("train")
def train_cmd(
    data: Path = typer.Option(..., "--data", help="Prepared dataset directory."),
    model: Optional[str] = typer.Option(None, "--model", help="Model name (see `mtkd models`; default dnn)."),
    config: Optional[Path] = typer.Option(None, "--config", help="Training config YAML."),
    sets: list[str] = typer.Option([], "--set", help="Override: key=value (dotted keys, YAML values), repeatable."),
    out_dir: Path = typer.Option(..., "--out", help="Run directory, e.g. runs/deepfm."),
    device: Optional[str] = typer.Option(None, "--device", help="auto, cpu, cuda or cuda:N (default: the config's, auto)."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Seed of initialisation and data order."),
    resume: bool = typer.Option(False, "--resume", help="Continue an interrupted run from its last finished epoch."),
    force: bool = typer.Option(False, "--force", help="Start over, deleting the run in --out."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
) -> None:
    """Train one model (teacher or plain student) with early stopping; writes runs/NAME/."""
    from mtkd.config import load_train_config
    from mtkd.train.run import train_run

    cfg = load_train_config(config, sets, model=model, device=device, seed=seed)
    summary = train_run(cfg, data, out_dir, resume, force, log=lambda s: err.print(s, markup=False, highlight=False),
                        progress=not quiet)
    _finish_train(summary)


def _teacher_refs(items: list[str]) -> list[dict]:
    """`runs/deepfm`, `name=runs/x` or `score:COLUMN` (a probability; `score:COLUMN:logit` a
    logit) -> teacher dicts."""
    refs = []
    for item in items:
        name, _, target = item.rpartition("=") if "=" in item else ("", "", item)
        if target.startswith("score:"):
            col, kind = target[len("score:"):], "probability"
            for k in ("probability", "logit"):
                if col.endswith(":" + k):
                    col, kind = col[: -len(k) - 1], k
            refs.append({"name": name or col, "score": col, "kind": kind})
        elif not target:
            raise MtkdError(f"--teacher {item!r}: no run directory after '='; e.g. -t {name or 'deepfm'}=runs/deepfm")
        else:
            if (Path(target) / "manifest.json").exists():
                raise MtkdError(f"--teacher {item!r}: {target} is a prepared dataset, not a run; pass a run "
                                "directory that `mtkd train` wrote, e.g. -t runs/deepfm")
            implicit = Path(target).name if Path(target).name not in ("", ".", "..") else Path(target).resolve().name
            refs.append({"name": name or implicit, "run": target})
    return refs


@app.command("score")
def score_cmd(
    data: Path = typer.Option(..., "--data", help="Prepared dataset directory."),
    teachers: list[str] = typer.Option(..., "--teacher", "-t", help="Teacher: RUN_DIR, NAME=RUN_DIR or score:COLUMN[:logit]; repeat."),
    hidden: bool = typer.Option(False, "--hidden", help="Also cache hidden vectors (hint losses, the policy)."),
    hidden_code: int = typer.Option(0, "--hidden-code",
                                    help="With --hidden: cache each vector's K-float code, as the policy reads "
                                         "it (its hidden_proj, 16), instead of the vector."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N (auto: a GPU when there is one)."),
) -> None:
    """Compute and cache teacher outputs for every split (skipped when the cache is current)."""
    from mtkd.data.store import Dataset
    from mtkd.distill.teachers import TeacherSpec, score_teachers
    from mtkd.train.device import resolve_device

    device = str(resolve_device(device))  # a bad --device is an error even when every cache is current
    ds = Dataset(data)
    specs = [TeacherSpec(r["name"], run=r.get("run"), score=r.get("score"), kind=r.get("kind", "probability"))
             for r in _teacher_refs(teachers)]
    if hidden_code < 0 or (hidden_code and not hidden):
        raise typer.BadParameter("--hidden-code K needs --hidden and K >= 1")
    dirs = score_teachers(ds, specs, with_hidden=hidden, device=device, hidden_code=hidden_code,
                          log=lambda s: err.print(s, markup=False, highlight=False))
    for d in dirs:
        out.print(str(d))


@app.command("distill")
def distill_cmd(
    data: Path = typer.Option(..., "--data", help="Prepared dataset directory."),
    teachers: list[str] = typer.Option([], "--teacher", "-t", help="Teacher: RUN_DIR, NAME=RUN_DIR or score:COLUMN[:logit]; repeat."),
    weighting: Optional[str] = typer.Option(None, "--weighting", help="average, single, fixed, learned, gate, confidence, best, random, lr_ensemble, policy (README: Distillation)."),
    model: Optional[str] = typer.Option(None, "--model", help="Student model (default dnn)."),
    config: Optional[Path] = typer.Option(None, "--config", help="Training config YAML with a `distill:` section."),
    sets: list[str] = typer.Option([], "--set", help="Override key=value, e.g. distill.alpha=0.3 or monitor=valid.kd_loss."),
    out_dir: Path = typer.Option(..., "--out", help="Run directory of the student."),
    device: Optional[str] = typer.Option(None, "--device", help="auto, cpu, cuda or cuda:N (default: the config's, auto)."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Seed of initialisation and data order."),
    resume: bool = typer.Option(False, "--resume", help="Continue an interrupted run from its last finished epoch."),
    force: bool = typer.Option(False, "--force", help="Start over, deleting the run in --out."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
) -> None:
    """Train a student from cached teacher outputs (offline KD), weighted per instance."""
    from mtkd.config import load_train_config
    from mtkd.train.run import train_run

    extra = list(sets)
    if teachers:
        extra.append(f"distill.teachers={json.dumps(_teacher_refs(teachers))}")
    if weighting:
        extra.append(f"distill.weighting={weighting}")
    cfg = load_train_config(config, extra, model=model, device=device, seed=seed)
    if cfg.distill is None:
        raise MtkdError("no teachers: pass --teacher RUN_DIR (repeatable) or a --config with a `distill:` section")
    summary = train_run(cfg, data, out_dir, resume, force, log=lambda s: err.print(s, markup=False, highlight=False),
                        progress=not quiet)
    _finish_train(summary)


@app.command("run")
def run_cmd(experiment: Path = typer.Argument(..., help="Experiment YAML (see configs/demo.yaml)."),
            force: bool = typer.Option(False, "--force", help="Retrain every run instead of reusing finished ones."),
            rerun_changed: bool = typer.Option(
                False, "--rerun-changed",
                help="Start over the runs whose settings changed (and the students of retrained teachers); "
                     "reuse the rest.")) -> None:
    """Prepare, train teachers, score, distil students, evaluate, and write the report (Markdown,
    CSV, HTML, PNG plots)."""
    from mtkd.config import load_experiment
    from mtkd.pipeline import Experiment

    cfg = load_experiment(experiment)
    exp = Experiment(cfg, str(experiment), log=lambda s: err.print(s, markup=False, highlight=False))
    exp.run(force=force, rerun_changed=rerun_changed)
    print((exp.out / "report.md").read_text())  # plain: a Markdown table must not be re-wrapped
    out.print(f"report: {exp.out / 'report.md'}, {exp.out / 'report.html'} (one page with the plots) "
              f"and {exp.out / 'report.csv'}")


@app.command("evaluate")
def evaluate_cmd(run: Path = typer.Argument(..., help="Run directory."),
                 split: str = typer.Option("test", "--split", help="train, valid or test."),
                 device: str = typer.Option("auto", "--device",
                                            help="auto, cpu, cuda or cuda:N (auto: a GPU when there is one)."),
                 data: Optional[Path] = typer.Option(None, "--data", help="The run's dataset, if it moved "
                                                     "(default: the path in its config.yaml)."),
                 as_json: bool = typer.Option(False, "--json")) -> None:
    """Evaluate a run's best weights on a split (AUC, logloss, calibration, gAUC / accuracy)."""
    from mtkd.train.run import evaluate_run

    metrics = evaluate_run(run, split, device, data)
    if as_json:
        out.print_json(jsonout.dumps(metrics))
        return
    t = Table(title=f"{run} on {split}")
    t.add_column("metric")
    t.add_column("value", justify="right")
    for k, v in metrics.items():
        t.add_row(k, f"{v:.5f}")
    out.print(t)


@app.command("export")
def export_cmd(run: Path = typer.Argument(..., help="Run directory (its best weights are exported)."),
               out_dir: Optional[Path] = typer.Option(None, "--out", help="Export directory (default RUN/export)."),
               formats: str = typer.Option("onnx", "--format", help="onnx, torchscript or both: onnx,torchscript."),
               tol: float = typer.Option(1e-4, "--tol", min=0.0, help="Largest difference from PyTorch allowed."),
               data: Optional[Path] = typer.Option(None, "--data", help="The run's dataset, if it moved.")) -> None:
    """Export a run to ONNX and/or TorchScript with its encoder and schema; each checked against PyTorch."""
    from mtkd.serve.export import export_run

    meta = export_run(run, out_dir, tol, tuple(f.strip() for f in formats.split(",") if f.strip()), data,
                      log=lambda s: err.print(s, markup=False, highlight=False))
    dest = out_dir or run / "export"
    for fmt, d in meta["formats"].items():
        out.print(f"{dest}: {meta['model']} -> {d['file']} ({fmt}, {d['bytes']:,} bytes), parity on "
                  f"{d['parity']['rows']:,} {d['parity']['split']} rows: max |diff| {d['parity']['max_abs_diff']:.2e}")


@app.command("predict")
def predict_cmd(model: Path = typer.Argument(..., help="Run directory (PyTorch) or export directory (ONNX, else TorchScript)."),
                input_path: Path = typer.Option(..., "--input", help="Raw file with the training files' columns."),
                out_path: Path = typer.Option(..., "--out", help="Output CSV (or .parquet; - for stdout): row, probability (or p_<class>)."),
                data: Optional[Path] = typer.Option(None, "--data", help="A run's dataset, if it moved.")) -> None:
    """Score a raw file, encoding it with the encoder the model was trained with."""
    from mtkd.serve.predict import predict_file

    r = predict_file(model, input_path, out_path, data)
    (err if r["out"] == "-" else out).print(f"{r['out']}: {r['rows']:,} rows scored with {r['engine']} in {r['seconds']:.2f} s "
              f"({r['rows_per_s']:,.0f} rows/s)")


@app.command("serve")
def serve_cmd(model: Path = typer.Argument(..., help="Run directory (PyTorch) or export directory (ONNX, else TorchScript)."),
              host: str = typer.Option("127.0.0.1", "--host"),
              port: int = typer.Option(8080, "--port", min=0, max=65535, help="TCP port; 0 takes a free one."),
              max_batch_rows: int = typer.Option(8192, "--max-batch-rows", min=1,
                                                 help="Most rows of concurrent requests scored in one model call."),
              workers: int = typer.Option(1, "--workers", min=1, help="Processes sharing the port, each with its own model."),
              data: Optional[Path] = typer.Option(None, "--data", help="A run's dataset, if it moved."),
              ) -> None:
    """HTTP scoring: POST /predict {"rows": [{column: value}, ...]}, GET /health, GET /metrics."""
    from mtkd.serve.scorer import Scorer
    from mtkd.serve.server import make_server

    if workers > 1:
        from mtkd.serve.workers import serve_workers

        if serve_workers(model, host, port, max_batch_rows, workers, log=err.print, data=data):
            raise typer.Exit(1)
        return None
    server = make_server(Scorer.open(model, data=data), host, port, max_batch_rows)
    server.run(lambda: err.print(f"serving {model} on http://{host}:{server.server_address[1]} "
                                 "(POST /predict, GET /health); Ctrl-C stops"))


@app.command("bench")
def bench_cmd(models: list[Path] = typer.Argument(..., help="Run and/or export directories."),
              batches: str = typer.Option("1,256,4096", "--batches", help="Batch sizes, comma-separated."),
              data: Optional[Path] = typer.Option(None, "--data", help="A run's dataset, if it moved.")) -> None:
    """Serving latency: median / p99 ms and rows/s of encoded rows to probabilities, per batch size."""
    import torch

    from mtkd.serve.bench import scorer_latency
    from mtkd.serve.scorer import Scorer

    try:
        sizes = tuple(int(b) for b in batches.split(","))
    except ValueError:
        sizes = ()
    if not sizes or min(sizes) < 1:
        raise MtkdError(f"--batches {batches!r}: expected batch sizes of at least 1, comma-separated, e.g. 1,256,4096")
    t = Table(title=f"serving latency (torch threads {torch.get_num_threads()})")
    for col in ("model", "engine", "batch", "p50 ms", "p99 ms", "rows/s"):
        t.add_column(col, justify="left" if col in ("model", "engine") else "right")
    for m in models:
        for engine in Scorer.engines(m) or [None]:  # every format of an export; a run's PyTorch model
            scorer = Scorer.open(m, engine, data=data)
            for b, r in scorer_latency(scorer, sizes).items():
                t.add_row("/".join(m.resolve().parts[-2:]), scorer.engine, str(b), f"{r['p50_ms']:.3f}",
                          f"{r['p99_ms']:.3f}", f"{r['rows_per_s']:,.0f}")
    out.print(t)


@app.command("models")
def models_cmd(data: Optional[Path] = typer.Option(None, "--data", help="Dataset whose feature map sizes the models."),
               sets: list[str] = typer.Option([], "--set", help="Hyper-parameter override for every model, key=value.")) -> None:
    """List the model zoo with parameter counts for a dataset (default: a Criteo-shaped map)."""
    from mtkd.config import apply_overrides
    from mtkd.data.feature_map import CategoricalField, FeatureMap
    from mtkd.data.store import Dataset
    from mtkd.models import MODELS, build_model, check_params

    if data is not None:
        fmap, where = Dataset(data).feature_map, str(data)
    else:
        fmap = FeatureMap(categorical=tuple(CategoricalField(f"C{i}", 10000) for i in range(1, 27)),
                          numeric=tuple(f"I{i}" for i in range(1, 14)))
        where = "a Criteo-shaped map (26 categorical x 10,000 ids, 13 numeric)"
    from mtkd.models import model_params
    from mtkd.models.registry import describe

    params = apply_overrides({}, sets)
    if isinstance(params.get("params"), dict):  # `mtkd train`'s spelling, params.embedding_dim=16
        params = {**params.pop("params"), **params}
    taken = set().union(*(model_params(m) for m in MODELS))
    if unknown := sorted(set(params) - taken):  # a typo: every row would say "not for this data"
        raise ConfigError(f"--set {', '.join(unknown)}: no model takes it; they take: {', '.join(sorted(taken))}")
    t = Table(title=f"models on {where}")
    for c in ("model", "parameters", "kind"):
        t.add_column(c, justify="right" if c == "parameters" else "left")
    for name in sorted(MODELS):
        doc = describe(name)
        mine = {k: v for k, v in params.items() if k in model_params(name)}  # LR has no MLP to size
        check_params(name, mine)  # a bad value is the user's error, not "not for this data"
        try:  # a model this data cannot feed (a text encoder without a text field) says why
            n = f"{sum(p.numel() for p in build_model(name, fmap, **mine).parameters()):,}"
        except MtkdError as e:
            n, doc = "-", f"not for this data: {e}"
        t.add_row(name, n, doc)
    out.print(t)


def _finish_train(summary: dict) -> None:
    """Print the summary (rank 0 alone under torchrun), then end a torchrun worker there: gloo can
    abort the interpreter's teardown (see `dist.end_process`)."""
    from mtkd.dist import end_process

    if int(os.environ.get("RANK", "0")) == 0:
        t = Table(title=f"{summary.get('model')}: best {summary.get('monitor')} {summary.get('best')} "
                        f"at epoch {summary.get('best_epoch')}")
        for c in ("split", "auc", "logloss", "accuracy", "gauc"):
            if c == "split" or any(c in summary.get(s, {}) for s in ("valid", "test")):
                t.add_column(c, justify="right" if c != "split" else "left")
        cols = [c.header for c in t.columns][1:]
        for s in ("valid", "test"):
            if s in summary:
                t.add_row(s, *("nan" if (v := summary[s].get(c)) is None else f"{v:.5f}" for c in cols))  # null: NaN
        out.print(t)
        out.print(f"params {summary.get('params'):,}  train {summary.get('train_seconds')}s "
                  f"({summary.get('train_samples_per_s'):,.0f} samples/s)")
    end_process()


def main(argv: Optional[list[str]] = None) -> int:
    """Entry point: run the CLI, turning user errors into one line and exit code 2."""
    try:
        import torch  # seconds: a Ctrl-C here is an interruption too, not a traceback
    except KeyboardInterrupt:
        err.print("interrupted")
        return 130

    torch.set_flush_denormal(True)  # before any thread pool starts: see train.trainer.configure_torch
    terminated, previous = sigterm_as_interrupt()
    try:
        return run_app(app, argv, terminated)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())


def console_main() -> None:
    sys.exit(main())
