"""`mtkd run EXPERIMENT.yaml`: prepare -> teachers -> score -> students -> evaluate -> report.

Every step writes its outputs atomically and is skipped when they are already there, so an
interrupted experiment continues where it stopped: finished runs are reused, unfinished ones
resume from their last finished epoch.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Callable

from mtkd import jsonout
from mtkd.config import ExperimentConfig, ModelSpec, TrainConfig, load_experiment
from mtkd.data.atomic import atomic_write_text, exclusive
from mtkd.data.batch import Batch
from mtkd.data.store import Dataset
from mtkd.errors import ConfigError, MtkdError
from mtkd.experiment_configs import RunConfigs
from mtkd.experiment_checks import check_models, check_params_of, experiment_schema, report_metrics


def _read_json(path: Path) -> dict[str, Any]:
    """A JSON file this pipeline wrote, or {} when missing or cut short (a full disk, a copy
    interrupted): what it recorded is then made again."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _exported(dest: Path, run: Path) -> bool:
    """Whether `dest` holds the export of `run`'s current best weights. The weights' hash, not
    only the path: a run retrained by an interrupted `--rerun-changed` kept its path, and its
    old export was then served beside the new run's scores."""
    from mtkd.train.checkpoint import file_digest

    meta = _read_json(dest / "export.json")
    return meta.get("run") == str(run.resolve()) and meta.get("weights") == file_digest(run / "best.pt")


class Experiment:
    def __init__(self, cfg: ExperimentConfig, source: str = "<experiment>", log: Callable[[str], None] = print):
        self.cfg = cfg
        self.source = source
        self.out = Path(cfg.out)
        self.log = log
        self.data_dir = Path(cfg.data.dir) if cfg.data.dir else self.out / "data"
        self.configs = RunConfigs(cfg, source, log, self.run_dir)

    # ------------------------------------------------------------------ steps
    def prepare(self, force: bool = False) -> Dataset:
        from mtkd.data.prepare import prepare
        from mtkd.data.synthetic import write_synthetic

        d = self.cfg.data
        schema = experiment_schema(self.cfg, self.source)
        if d.synth is not None:
            csv = self.out / "raw" / "synth.csv"
            meta = csv.with_name(csv.name + ".meta.json")
            s = d.synth
            want = {"rows": s.rows, "seed": s.seed, "task": s.task, **({"classes": s.classes} if s.task != "binary" else {})}
            if meta.exists():
                old = json.loads(meta.read_text())
                have = {k: old.get(k) for k in want}
                if have != want:
                    raise ConfigError(f"{self.source}: {self.out} holds synthetic data made with {have}, not "
                                      f"{want}; use another `out` or delete {self.out}")
            else:
                write_synthetic(csv, s.rows, s.seed, s.task, s.classes)
                self.log(f"wrote synthetic data {csv}")
            train: list[Any] = [csv]
        else:
            train = list(d.train)
        # the experiment's own `OUT/data` is prepared again when its inputs change; a `data.dir`
        # only when it holds this data (edited, touched, or another experiment's copy of it):
        # another dataset there (prepared by hand, or by another experiment) is refused
        prepare(schema, self.data_dir, train, d.valid, d.test, d.split, d.ordered, force=force, log=self.log,
                replace_changed=True if d.dir is None else "same_data",
                out_flag="`out`" if d.dir is None else "data.dir")
        return Dataset(self.data_dir)

    def run_dir(self, kind: str, name: str, seed: int) -> Path:
        return self.out / kind / name / f"seed{seed}"

    def teacher_config(self, t: ModelSpec, seed: int) -> TrainConfig:
        return self.configs.teacher(t, seed)

    def student_config(self, s: ModelSpec, seed: int) -> TrainConfig:
        return self.configs.student(s, seed)

    def _train(self, cfg: TrainConfig, data: Path, out: Path, force: bool,
               rerun_changed: bool = False) -> tuple[dict[str, Any], bool]:
        """The run's summary, and whether it was trained now (not reused)."""
        from mtkd.train.run import train_run

        start_over = self._starts_over(cfg, data, out, force, rerun_changed, self.log)
        if not self._trains(out, start_over):
            summary = json.loads((out / "summary.json").read_text())
            self.log(f"  reused: {out} finished earlier with these settings (best epoch "
                     f"{summary.get('best_epoch')}); --force trains it again")
            return summary, False
        return train_run(cfg, data, out, resume=not start_over, force=start_over, log=self.log,
                         progress=False), True

    def _starts_over(self, cfg: TrainConfig, data: Path, out: Path, force: bool, rerun_changed: bool,
                     log: Callable[[str], None] | None) -> bool:
        """Whether the run starts from nothing. A finished run is reused; one whose settings
        changed is refused, or with `rerun_changed` started over, as is a student whose teacher
        was retrained after it. `log` None decides without saying so (asked ahead of the run)."""
        from mtkd.train.run import CONFIG, changed_settings, retrained_teachers, run_config_dict

        if force or not (out / CONFIG).exists():
            return force
        cfg_dict = run_config_dict(cfg, Dataset(data))
        diff = changed_settings(out, cfg_dict, teachers=False)
        if diff and not rerun_changed:
            raise MtkdError(f"{out}: this run's settings changed since it ran (different configuration: "
                            f"{', '.join(diff)}); `mtkd run --rerun-changed` starts over the runs whose "
                            "settings changed (and the students of retrained teachers), `--force` every run")
        newer = [] if diff else retrained_teachers(out, cfg_dict)
        if newer is None:  # saved before teachers' weights were recorded: by modification time
            newer = self._newer_teachers(cfg, out / "summary.json")
        if newer and not rerun_changed and not (out / "summary.json").exists():
            if log:  # unfinished: resuming would learn its last epochs from another teacher than its first
                log(f"  teacher {', '.join(newer)} was retrained after this unfinished run's last checkpoint: "
                    "starting it over")
            return True
        if newer and not rerun_changed:
            if log:
                log(f"  warning: teacher {', '.join(newer)} was retrained after this run, which is reused "
                    "as it is; `mtkd run --rerun-changed` distils it again from the new teacher")
            return False
        if diff or newer:
            if log:
                why = f"settings changed ({', '.join(diff)})" if diff else f"teacher {', '.join(newer)} retrained"
                log(f"  {why}: starting this run over")
            return True
        return False

    @staticmethod
    def _trains(out: Path, start_over: bool) -> bool:
        """Whether the run trains now (from nothing or resumed) rather than being reused. Without a
        saved config it is no finished run (train_run says so when it is a broken one)."""
        from mtkd.train.run import CONFIG

        return start_over or not ((out / CONFIG).exists() and (out / "summary.json").exists())

    @staticmethod
    def _newer_teachers(cfg: TrainConfig, summary_path: Path) -> list[str]:
        """Teachers (runs) whose best weights are newer than what the student last wrote: its
        summary when finished, else the checkpoint it would resume from."""
        ref = next((p for p in (summary_path, summary_path.with_name("last.pt")) if p.exists()), None)
        if cfg.distill is None or ref is None:
            return []
        done = ref.stat().st_mtime_ns
        return [t.name for t in cfg.distill.teachers
                if t.run is not None and (Path(t.run) / "best.pt").exists()
                and (Path(t.run) / "best.pt").stat().st_mtime_ns > done]

    # ------------------------------------------------------------------ the whole path
    def run(self, force: bool = False, rerun_changed: bool = False) -> list[dict[str, Any]]:
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # every rank would prepare and write the same files
            raise MtkdError("`mtkd run` is one process; under torchrun start `mtkd train` per model "
                            "(`torchrun ... -m mtkd train --config ...`), or run the experiment without torchrun")

        check_models(self.cfg, self.source)
        self.metrics = report_metrics(self.cfg, self.source)
        plan: list[tuple[str, ModelSpec, Callable[[ModelSpec, int], TrainConfig]]] = \
            [("teachers", t, self.teacher_config) for t in self.cfg.teachers] + \
            [("students", s, self.student_config) for s in self.cfg.students]
        configs = {(kind, m.name, seed): make(m, seed) for kind, m, make in plan for seed in self.cfg.seeds}
        check_params_of(configs, self.source)
        if self.out.exists() and not self.out.is_dir():
            raise ConfigError(f"{self.source}: out: {self.out} is a file; name a directory for the experiment")
        self.out.mkdir(parents=True, exist_ok=True)
        with exclusive(self.out.resolve(), "run", wait=False):  # OUT/.run.lock: two runs of one OUT share its runs
            if not (force or rerun_changed):
                self._refuse_changed(configs)
            return self._run(plan, configs, force, rerun_changed)

    def _refuse_changed(self, configs: dict[tuple[str, str, int], TrainConfig]) -> None:
        """Every finished or started run whose settings changed, named at once before anything
        trains (one at a time, each fix found the next only after the runs before it)."""
        from mtkd.train.run import CONFIG, changed_settings, run_config_dict

        try:
            ds, changed = Dataset(self.data_dir), []
        except (MtkdError, OSError, ValueError):  # not prepared yet, or by an older version: prepare first
            return
        for (kind, name, seed), cfg in configs.items():
            out = self.run_dir(kind, name, seed)
            if not (out / CONFIG).exists():
                continue
            try:
                diff = changed_settings(out, run_config_dict(cfg, ds, teachers=False), teachers=False)
            except MtkdError:  # a damaged file: its own turn says so
                continue
            if diff:
                changed.append(f"  {out}: {', '.join(diff)}")
        if changed:
            raise MtkdError(f"{self.source}: these runs' settings changed since they ran:\n" + "\n".join(changed) +
                            "\n`mtkd run --rerun-changed` starts them over (and the students of retrained teachers) "
                            "and reuses the rest, `--force` starts every run over. An experiment you did not edit: "
                            "how its layers combine is in README, Experiments")

    def _run(self, plan: list[tuple[str, ModelSpec, Any]], configs: dict[tuple[str, str, int], TrainConfig],
             force: bool, rerun_changed: bool) -> list[dict[str, Any]]:
        from mtkd.report import summarise
        from mtkd.serve.bench import batch_latency_ms, first_rows
        from mtkd.train.run import load_run

        ds = self.prepare(force)  # changed raw files are prepared again; --force prepares in any case
        task = ds.feature_map.task
        rows: list[dict[str, Any]] = []
        sample = first_rows(ds, "test", min(self.cfg.inference_rows, ds.split("test").rows))
        self.latency_rows = len(sample)
        by_seed: dict[int, list[dict[str, Any]]] = {seed: [] for seed in self.cfg.seeds}
        retrained: set[Path] = set()
        for kind, m, _ in plan:
            if kind == "students" and m is self.cfg.students[0]:
                self._score_hidden_first(configs, ds, force, rerun_changed)
            summaries = []
            for seed in self.cfg.seeds:
                out = self.run_dir(kind, m.name, seed)
                self.log(f"[{kind[:-1]} {m.name} seed {seed}]")
                summary, trained = self._train(configs[(kind, m.name, seed)], self.data_dir, out, force,
                                               rerun_changed)
                summaries.append(summary)
                if trained:
                    retrained.add(out)
                if kind == "teachers":
                    by_seed[seed].append(summaries[-1])
            run0 = self.run_dir(kind, m.name, self.cfg.seeds[0])
            _, _, model = load_run(run0)
            latency = batch_latency_ms(model, sample) * 1000.0 / len(sample)
            cfg0 = configs[(kind, m.name, self.cfg.seeds[0])]
            rows.append(summarise(m.name, kind[:-1], _method(cfg0), summaries, latency, task,
                                  self.metrics))
            rows[-1]["run"] = str(run0)
            if m.name in self.cfg.export:
                rows[-1]["onnx_ms_per_1000_rows"] = self._export(run0, m.name, sample, force or run0 in retrained)
            if kind == "teachers" and m is self.cfg.teachers[-1] and len(self.cfg.teachers) > 1:
                rows.append(self._ensemble_row(by_seed, rows, ds))
            self._write_report(rows, ds, task)
        return rows

    def _score_hidden_first(self, configs: dict[tuple[str, str, int], TrainConfig], ds: Dataset,
                            force: bool, rerun_changed: bool) -> None:
        """Cache the teachers' outputs with hidden vectors before any student trains, for each
        student that will read them and still has to run: the students that read only logits
        then find their logits in that cache, so no teacher is scored twice."""
        from mtkd.distill.build import score_offline_teachers, teacher_plan
        from mtkd.train.device import resolve_device

        for (kind, name, seed), cfg in configs.items():
            d = cfg.distill
            if kind != "students" or d is None or d.mode != "offline" or not teacher_plan(d)[1]:
                continue
            out = self.run_dir(kind, name, seed)
            if self._trains(out, self._starts_over(cfg, self.data_dir, out, force, rerun_changed, None)):
                self.log(f"[teachers of student {name} seed {seed}: logits and hidden vectors]")
                score_offline_teachers(cfg, ds, device=str(resolve_device(cfg.device)), log=self.log)

    def _ensemble_row(self, by_seed: dict[int, list[dict[str, Any]]], rows: list[dict[str, Any]],
                      ds: Dataset) -> dict[str, Any]:
        """The row of the teachers' probability average: what serving all of them would give,
        at the sum of their parameters and latencies."""
        from mtkd.distill.ensemble import ensemble_summary
        from mtkd.report import summarise

        names = [t.name for t in self.cfg.teachers]
        self.log(f"[ensemble of {len(names)} teachers]")
        summaries = []
        for seed in self.cfg.seeds:
            runs = [self.run_dir("teachers", n, seed) for n in names]
            # kept per seed, keyed by the teachers' summaries: rebuilding a report re-scores nothing
            key = hashlib.sha256("".join([ds.checksum, *((r / "summary.json").read_text() for r in runs)])
                                 .encode()).hexdigest()
            path = self.out / "ensemble" / f"seed{seed}.json"
            saved = _read_json(path)
            if saved.get("key") != key:
                saved = {"key": key, "summary": ensemble_summary(runs, by_seed[seed], ds)}
                atomic_write_text(path, jsonout.dumps(saved, indent=1))
            summaries.append(saved["summary"])
        latency = sum(r["ms_per_1000_rows"] for r in rows if r["kind"] == "teacher")
        return summarise("ensemble", "ensemble", f"average of {len(names)} teachers' probabilities", summaries,
                         latency, ds.feature_map.task, self.metrics)

    def _export(self, run: Path, name: str, sample: Batch, force: bool) -> float:
        """ONNX export of `run` into OUT/exports/NAME (kept when already there for this run), and
        its ONNX Runtime time per 1,000 of the same test rows the PyTorch column uses."""
        from mtkd.serve.bench import scorer_ms_per_row
        from mtkd.serve.export import export_run
        from mtkd.serve.scorer import Scorer, batch_arrays

        dest = self.out / "exports" / name
        if force or not _exported(dest, run):
            m = export_run(run, dest)
            self.log(f"[export {name}] {dest}: parity {m['parity']['max_abs_diff']:.1e} on {m['parity']['rows']} rows")
        return scorer_ms_per_row(Scorer.open(dest), batch_arrays(sample)) * 1000.0

    def _write_report(self, rows: list[dict[str, Any]], ds: Dataset, task: str) -> None:
        from mtkd.report import to_csv, to_html, to_markdown
        from mtkd.report_plots import draw_all

        notes = [f"Data: `{ds.root}` ({ds.manifest['name']}, checksum {ds.checksum}); "
                 f"test rows {ds.split('test').rows:,}; seeds {self.cfg.seeds}."]
        meta = self.out / "raw" / "synth.csv.meta.json"
        if meta.exists():
            bayes = json.loads(meta.read_text())["bayes_optimal"]["test_split"]
            if "auc" in bayes:
                notes.append(f"Bayes-optimal test AUC {bayes['auc']:.4f}, logloss {bayes['logloss']:.4f} "
                             "(true probabilities of the synthetic generator).")
        import torch

        n = self.latency_rows
        scaled = "" if n == 1000 else f" (measured on {n:,} rows and scaled, so a call's fixed cost is counted " \
                                      f"{1000 / n:.3g} times)"
        notes.append(f"Latency: PyTorch eager forward of one batch of {n:,} test rows, best of 20 after 3 warm-up "
                     f"calls, {torch.get_num_threads()} thread(s) on this machine, per 1,000 rows{scaled}"
                     + ("; ONNX: the exported model in ONNX Runtime on the same rows (`exports/`)."
                        if any("onnx_ms_per_1000_rows" in r for r in rows) else "."))
        title = f"{self.cfg.name}: teachers and students"
        images = tuple(draw_all(rows, self.out, task))
        atomic_write_text(self.out / "report.md", to_markdown(rows, title, notes, task, images))
        atomic_write_text(self.out / "report.html", to_html(rows, title, notes, task, images))
        atomic_write_text(self.out / "report.csv", to_csv(rows))
        atomic_write_text(self.out / "results.json", jsonout.dumps(rows, indent=1))


def _method(cfg: TrainConfig) -> str:
    d = cfg.distill
    if d is None:
        return "no KD"
    if d.mode == "cotrain":
        return f"co-trained, {d.weighting}"
    how = d.weighting
    if d.weighting == "single":
        how = f"single ({d.weighting_params.get('teacher')})"
    if d.weighting == "policy":
        how = f"policy ({d.weighting_params.get('reward', 'ce')} reward)"
    if d.weighting_params.get("fit_on") == "valid":
        how += " fitted on valid rows"
    extra = f", stop on {cfg.monitor}" if cfg.monitor not in ("auto", "valid.auc", "valid.accuracy") else ""
    if d.valid_holdout is not None:
        extra += f", valid rows in training (held out {d.valid_holdout:g})"
    return f"KD {how}{extra}"


def run_experiment(path: Path, force: bool = False, log: Callable[[str], None] = print,
                   rerun_changed: bool = False) -> list[dict[str, Any]]:
    cfg = load_experiment(path)
    return Experiment(cfg, str(path), log).run(force=force, rerun_changed=rerun_changed)
