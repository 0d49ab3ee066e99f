"""Running a resolved sweep: Ray Tune + Optuna over Ray Train trials, recorded in MLflow.

`run_sweep` reads top to bottom as three steps: `prepare` (the run's state, its MLflow parent run, the offline
assets, Ray, the untuned baseline), `search` (the Tuner, new or restored, run to its end) and `conclude` (the
report and the exit status). The Tune wiring (searcher, scheduler, trial function) and the end-of-sweep
records follow them.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from platform import baselines, console, progress, publish, registry, report, report_render, studies, tracking
from platform.cluster import ROOT, connect_ray, start_local_ray
from platform.report_data import trial_rows
from platform.spaces import ResolvedSweep
from trainables.blocks.config import ConfigError, redact
from trainables.blocks.launch import CONFIG_ERROR

STATE_FILE = "sweep.json"
HEAD_NODE = "node:__internal_head__"
"""The resource only Ray's head node has."""
PROGRESS_INTERVAL_S = float(os.environ.get("SPEECH_SWEEPS_PROGRESS_S", "30"))
"""Seconds between two progress tables (also printed whenever a trial starts, finishes or fails)."""

EXIT_OK, EXIT_FAILED_TRIALS, EXIT_BAD_RESUME, EXIT_INTERRUPTED = 0, 1, 2, 130


def run_sweep(sweep: ResolvedSweep, *, overrides: dict[str, Any], why: str, tracking_uri: str | None,
              storage: str | None, resume: bool, started: float, fresh_baseline: bool = False,
              verbose: bool = False, register: bool = True, optuna_storage: str | None = None) -> int:
    """Run a resolved sweep to its end; the exit status: 0 when every trial finished, 1 when some failed,
    130 when the sweep was interrupted (--resume continues it), 2 when --resume finds no run to continue.
    `optuna_storage`: the database URL of the sweep's Optuna study (default: an sqlite file beside its state)."""
    uri = tracking_uri or tracking.default_tracking_uri(ROOT)
    try:
        run = prepare(sweep, uri=uri, storage=storage, resume=resume, overrides=overrides, why=why,
                      fresh_baseline=fresh_baseline, verbose=verbose, optuna_storage=optuna_storage)
    except ResumeError as exc:
        print(f"error: --resume: {exc}", file=sys.stderr)
        return EXIT_BAD_RESUME
    search(run)
    return conclude(run, started, register=register)


class ResumeError(RuntimeError):
    """--resume finds no earlier run of the sweep to continue (one line)."""


@dataclass
class SweepRun:
    """One run of a sweep by this driver: its state on disk (`sweep.json`: stamp, preset, overrides, tracking
    URI, parent run, baseline), where Tune and Ray Train keep its results, and, once prepared, its MLflow
    client and progress board."""

    sweep: ResolvedSweep
    uri: str
    run_dir: Path
    """The run's state and its Optuna study (always on this machine)."""
    state: dict[str, Any]
    experiment_path: str
    """Tune's storage for the sweep: a folder, or a remote URI (s3://...)."""
    resume: bool
    client: Any = None
    board: Any = None
    log_file: Path | None = None
    """Where the libraries' logs go (None with --verbose: to the console)."""
    study_storage: str = ""
    """The database URL of the run's Optuna study, password included (the state keeps it without)."""

    @property
    def stamp(self) -> str:
        return self.state["stamp"]

    @property
    def parent(self) -> str:
        """The MLflow parent run's id."""
        return self.state["parent_run_id"]

    @property
    def results(self) -> str:
        """Tune's experiment folder of this run."""
        return f"{self.experiment_path}/{self.stamp}"

    @property
    def train_storage(self) -> str:
        """Where the run's Ray Train runs (the trials' and the baseline's) keep their checkpoints."""
        return f"{self.experiment_path}/{self.stamp}-train"

    @property
    def study_name(self) -> str:
        return f"{self.sweep.name}-{self.stamp}"

    @property
    def tags(self) -> dict[str, str]:
        """Tags of the parent run and of every trial's run."""
        s = self.sweep
        device = "gpu" if s.resources.gpus_per_worker > 0 else "cpu"
        return {"sweep": s.name, "method": s.method, "preset": s.preset, "device": device, "stamp": self.stamp}

    def save(self) -> None:
        _save(self.run_dir, self.state)


# --------------------------------------------------------------------------------------------- 1. prepare


def prepare(sweep: ResolvedSweep, *, uri: str, storage: str | None, resume: bool, overrides: dict[str, Any], why: str,
            fresh_baseline: bool, verbose: bool = False, optuna_storage: str | None = None) -> SweepRun:
    """The run's state (new, or the latest earlier run's with --resume), its Optuna study, its MLflow parent run,
    the offline assets its trials need, Ray, and the untuned model's metrics. Unless `verbose`, the libraries' own
    logs go to files in the results folder (platform/console.py)."""
    run = sweep_state(sweep, uri=uri, storage=storage, resume=resume, overrides=overrides)
    if not verbose:
        run.log_file = console.libraries_to_file(run.run_dir)
    open_study(run, optuna_storage)
    open_parent_run(run, why)
    prepare_assets(sweep)
    if not connect_ray(log_to_driver=verbose):
        start_local_ray(log_to_driver=verbose)
    run.board = progress.start_board()
    run.client = tracking.client(uri)
    record_baseline(run, fresh=fresh_baseline)
    return run


def sweep_state(sweep: ResolvedSweep, *, uri: str, storage: str | None, resume: bool,
                overrides: dict[str, Any]) -> SweepRun:
    """A new run stamped now, or with --resume the latest earlier run of the sweep (which used the same preset).
    State stays on this machine (`ray_results/NAME/STAMP`) even when results go to remote storage."""
    storage_root = storage or str(ROOT / "ray_results")
    remote = "://" in storage_root
    state_root = (ROOT / "ray_results" if remote else Path(storage_root).resolve()) / sweep.name
    experiment_path = f"{storage_root.rstrip('/')}/{sweep.name}" if remote else str(state_root)
    if resume:
        run_dir = latest_run_dir(state_root)
        if run_dir is None:
            raise ResumeError(f"no earlier run of {sweep.name} under {state_root}")
        state = json.loads((run_dir / STATE_FILE).read_text())
        if state.get("preset") != sweep.preset:
            raise ResumeError(f"the run in {run_dir} used preset {state.get('preset')!r}, not {sweep.preset!r}")
    else:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        run_dir = state_root / stamp
        run_dir.mkdir(parents=True, exist_ok=True)
        state = {"stamp": stamp, "preset": sweep.preset, "overrides": redact(overrides), "tracking_uri": uri,
                 "commit": publish.git_commit(ROOT), "machine": publish.machine()}  # what a results page cites
    return SweepRun(sweep, uri, run_dir, state, experiment_path, resume)


def latest_run_dir(state_root: Path) -> Path | None:
    runs = sorted(p for p in state_root.glob("*/" + STATE_FILE)) if state_root.exists() else []
    return runs[-1].parent if runs else None


def open_study(run: SweepRun, given: str | None) -> None:
    """Create the run's Optuna study before Ray or any trial starts: on `given` (--optuna-storage), else where the
    run first put it (a resumed run; its state keeps the URL without its password), else in the sqlite file
    beside the run's state. Raises ResumeError when a resumed run is pointed elsewhere or needs the password."""
    kept = run.state.get("optuna_storage")
    if kept and given and studies.shown(given) != kept:
        raise ResumeError(f"the run's study is on {kept}, not {studies.shown(given)} (--optuna-storage)")
    if kept and not given and studies.has_hidden_password(kept):
        raise ResumeError(f"the run's study is on {kept}: give its URL with the password again (--optuna-storage)")
    url = given or kept or studies.default_url(run.run_dir)
    if given and not kept:
        run.state["optuna_storage"] = studies.shown(given)
        run.save()
    studies.create_study(url, run.study_name, run.sweep.objectives[1])
    run.study_storage = url
    print(f"optuna    study {run.study_name} in {studies.shown(url)}", flush=True)


def open_parent_run(run: SweepRun, why: str) -> None:
    """The sweep's MLflow parent run, created once (a resumed run continues its own), and where to find it all."""
    sweep = run.sweep
    if "parent_run_id" not in run.state:
        run.state["parent_run_id"] = tracking.start_parent(
            run.uri, sweep.name, {**run.tags, **report_tags(sweep), "preset_reason": why},
            {"config": sweep.config, "space": {k: vars(p) for k, p in sweep.space.items()},
             "searcher": vars(sweep.searcher), "scheduler": vars(sweep.scheduler), "num_samples": sweep.num_samples},
            config=_resolved_or_none(sweep), describe=report_render.parent_description,
        )
        run.save()
    print(f"mlflow    {run.uri}  (experiment {sweep.name}, parent run {run.parent})", flush=True)
    print(f"results   {run.results}", flush=True)


def report_tags(sweep: ResolvedSweep) -> dict[str, str]:
    """What `platform.report` needs to rebuild the report from MLflow alone, as parent-run tags."""
    seed_key = sweep.ablation.seed_key if sweep.ablation else None
    space = {k: {f: v for f, v in vars(p).items() if f != "named"} for k, p in sweep.space.items()}
    return {
        "description": sweep.description,
        "searched_keys": json.dumps([k for k in sweep.space if k != seed_key]),
        "space": json.dumps(space),
        "objectives": json.dumps(list(sweep.objectives)),
        "searcher_type": sweep.searcher.type,
        "ablation": json.dumps(vars(sweep.ablation) if sweep.ablation else None),
    }


def _resolved_or_none(sweep: ResolvedSweep) -> dict[str, Any] | None:
    """The method's whole config for the sweep's fixed part (what its parent run's data inputs describe)."""
    try:
        return tracking.resolved_config(sweep.method, sweep.config, sweep.space, {})
    except Exception:  # noqa: BLE001 - only the parent's dataset inputs are lost
        return None


def prepare_assets(sweep: ResolvedSweep) -> None:
    """Build the offline models and corpora the sweep names here, with progress bars, before any trial
    starts (each is built once and cached; trials on this machine then find them ready)."""
    from trainables import assets
    from trainables.assets.corpus import CORPORA, ensure_corpus
    from trainables.assets.natural_voice import NATURAL_FOR_CORPUS, ensure_natural
    from trainables.blocks.config import flatten

    values = list(flatten(sweep.config).values())
    for p in sweep.space.values():
        values += list(p.values or [])
        values += [v for overrides in (p.named or {}).values() for v in flatten(overrides).values()]
    names = [v for v in dict.fromkeys(v for v in values if isinstance(v, str))
             if v in CORPORA or (v in assets.ASSETS and assets.ASSETS[v].kind == "model")]
    # The natural-voice test sets every trial is scored on: its corpus's, and those data.natural_also lists.
    also = [x for v in values if isinstance(v, list) for x in v if isinstance(x, str)]
    natural = [NATURAL_FOR_CORPUS[n] for n in dict.fromkeys(names + also) if n in NATURAL_FOR_CORPUS]
    for name in names + natural:
        print(f"preparing {name} (built once, then cached) ...", flush=True)
        if name in CORPORA:
            ensure_corpus(name)
        elif name in natural:
            ensure_natural(name)
        else:
            assets.ASSETS[name].ensure()


def record_baseline(run: SweepRun, *, fresh: bool) -> None:
    """The untuned model's metrics as the parent run's `baseline_*` metrics, once per sweep. A sweep whose
    baseline fails goes on without its reference line (the parent's `baseline_error` tag says why)."""
    if not run.sweep.baseline or "baseline" in run.state:
        return
    c = run.client
    try:
        run.state["baseline"] = sweep_baseline(run.sweep, run.train_storage, run.board, c, run.parent, fresh=fresh)
    except Exception as exc:  # the sweep goes on without its reference line
        run.state["baseline"] = {}
        c.set_tag(run.parent, "baseline_error", str(exc).splitlines()[0][:5000])
    tracking.log_metrics(c, run.parent, {f"baseline_{k}": v for k, v in run.state["baseline"].items()}, 0)
    run.save()


def sweep_baseline(sweep: ResolvedSweep, train_storage: str, board: Any, c: Any, parent: str, *,
                   fresh: bool) -> dict[str, float]:
    """The untuned model's metrics: read from the on-disk cache when this machine has measured the same baseline
    before (platform/baselines.py), else measured (`measure_baseline`) and cached. A cached one is said on the
    console and tagged on the parent run (`baseline_cache`, `baseline_cached_at`)."""

    def measure() -> dict[str, float]:
        print("measuring the untuned model once (baseline) ...", flush=True)
        with progress.board_bar(board, "baseline", "baseline"):
            return measure_baseline(sweep, train_storage)

    result = baselines.cached_or_measured(baselines.sweep_inputs(sweep), measure, fresh=fresh)
    if result.cached:
        print(f"the untuned model (baseline): cached {result.measured_at}, not measured again ({result.path}; "
              f"--fresh-baseline measures it again)", flush=True)
        c.set_tag(parent, "baseline_cache", str(result.path))
        c.set_tag(parent, "baseline_cached_at", result.measured_at)
    return result.metrics


def measure_baseline(sweep: ResolvedSweep, train_storage: str) -> dict[str, float]:
    """The untuned model's metrics, measured once per sweep with the method's baseline config."""
    from trainables import load_method
    from trainables.blocks.launch import torch_trainer

    module = load_method(sweep.method)
    config = module.baseline_config(sweep.config)
    result = torch_trainer(sweep.method, config, storage_path=train_storage, name="baseline",
                           **trainer_resources(sweep)).fit()
    if result.error is not None or CONFIG_ERROR in (result.metrics or {}):
        raise RuntimeError(f"baseline run failed: {result.error or result.metrics[CONFIG_ERROR]}")
    return tracking.numeric_metrics(result.metrics)


# --------------------------------------------------------------------------------------------- 2. search


def search(run: SweepRun) -> None:
    """Run the Tuner, new or (with --resume) restored, until every trial has ended or the driver is interrupted
    (Tune then saves its state and returns)."""
    # Intermediate reports (validation WER every `eval.every` steps) do not carry the searcher's objective, which
    # Tune's strict check would take for a trial that never reports it: trials report it at the end, always.
    os.environ.setdefault("TUNE_DISABLE_STRICT_METRIC_CHECKING", "1")
    # A tracking server that stops answering mid-sweep must not hold the writer in the client's minutes of
    # retries: a few, then the callback keeps the records and tries again every few seconds. A server that is
    # only slow (two sweeps' trials on 2 cores) can take over 15 s to answer; a write the client gave up on may
    # still be done there, so the timeout is long enough that a slow answer is not taken for none.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "60")
    # Tune saves its state (trials, searcher) at most every 10 s by default. A driver lost in that window after a
    # trial ended or began leaves a state the study and MLflow are ahead of: --resume then runs the ended trial
    # again and gives the begun one's configuration to a new trial. Saving every second narrows that window to a
    # second; a save of a sweep's state takes milliseconds.
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "1")
    build_tuner(run).fit()


def build_tuner(run: SweepRun) -> Any:
    """The Tuner of the run: restored from its results with --resume (unfinished trials go on; Tune brings back
    its callbacks), else a new one with the sweep's searcher, scheduler, budget and callbacks."""
    from ray import tune

    trainable = trial_trainable(run)
    if run.resume and tune.Tuner.can_restore(run.results):
        print(f"resuming {run.results}", flush=True)
        return tune.Tuner.restore(run.results, trainable=trainable, resume_unfinished=True, resume_errored=False,
                                  restart_errored=False)
    from ray.tune import RunConfig

    return tune.Tuner(
        trainable,
        tune_config=tune_config(run.sweep, run.study_storage, run.study_name),
        # verbose=0: the live table (platform/progress.py) replaces Tune's status table.
        run_config=RunConfig(name=run.stamp, storage_path=run.experiment_path, callbacks=tune_callbacks(run),
                             verbose=0),
    )


def tune_config(sweep: ResolvedSweep, study_storage: str, study_name: str) -> Any:
    """The sweep's searcher, scheduler and budget, and whether trials reuse each other's function actors."""
    from ray.tune import TuneConfig

    return TuneConfig(search_alg=make_searcher(sweep, study_storage, study_name), scheduler=make_scheduler(sweep),
                      num_samples=sweep.num_samples, max_concurrent_trials=sweep.max_concurrent_trials,
                      # A finished trial's function actor runs the next trial: its start and its imports of Tune
                      # and Ray Train, 1.2 s of every trial's start on 2 cores, are paid once (docs/benchmarks.md).
                      # Not where a scheduler stops trials: a stopped trial's actor, reset for the next one, would
                      # leave the stopped trial's Train run going without its report queue.
                      reuse_actors=sweep.scheduler.type == "none")


def trial_trainable(run: SweepRun) -> Any:
    """The trial function with what it reserves. It only waits on its Train run, which reserves the workers'
    resources itself. Reserving a CPU for the function too would leave a 2-core laptop unable to place the
    worker, and Ray refuses an empty request, so the function asks for a little memory and no CPU."""
    from ray import tune

    sweep = run.sweep
    trial = make_trial(sweep.method, sweep.config, sweep.space, trainer_resources(sweep), run.train_storage)
    # The trial function (and the Train controller, which Ray places on its node) stays on the head node,
    # the one a cluster cannot lose: losing a worker node then costs only the Train workers on it, which
    # Ray Train restarts elsewhere from the latest checkpoint.
    return tune.with_resources(trial, {"CPU": 0, "memory": 64 * 1024 * 1024, HEAD_NODE: 0.001})


def tune_callbacks(run: SweepRun) -> list[Any]:
    """The MLflow records of every trial, and the live progress table."""
    sweep = run.sweep
    records = tracking.MlflowTrials(run.uri, sweep.name, run.parent, run.tags, sweep.method, sweep.config, sweep.space,
                                    scheduled=sweep.scheduler.type != "none",
                                    gpus_per_trial=sweep.resources.num_workers * sweep.resources.gpus_per_worker)
    live = progress.LiveProgress(run.board, sweep.name, sweep.num_samples, sweep.max_concurrent_trials,
                                 label=lambda trial: tracking.trial_label(dict(trial.config), sweep.space),
                                 interval_s=PROGRESS_INTERVAL_S)
    return [records, live]


def make_trial(method: str, fixed: dict[str, Any], space: dict[str, Any], resources: dict[str, Any],
               train_storage: str) -> Any:
    """The Tune function trainable: one Ray Train run of `method` with the trial's sampled values.

    The trial function itself reserves nothing; the Train run it starts asks for the workers.
    Metrics flow back to Tune from the trial function's thread (`platform.train_reports`), so ASHA can stop a
    trial between reports.
    """

    def trial(sampled: dict[str, Any]) -> None:
        from ray import tune

        from platform.spaces import trial_config
        from platform.train_reports import fit_reporting
        from trainables.blocks.launch import torch_trainer

        config = trial_config(fixed, space, dict(sampled))
        # The Train run's name is the trial's: a trial restarted after the driver was lost (--resume) starts
        # a Train run of the same name, which picks up that run's latest checkpoint.
        name = f"train-{tune.get_context().get_trial_id()}"
        # check=False: the sweep checked the method's configs and worker limit before it started.
        result = fit_reporting(lambda callbacks: torch_trainer(method, config, storage_path=train_storage, name=name,
                                                               callbacks=callbacks, check=False, **resources))
        error = (result.metrics or {}).get(CONFIG_ERROR)
        if error:
            raise ConfigError(error)

    return trial


def trainer_resources(sweep: ResolvedSweep) -> dict[str, Any]:
    r, f = sweep.resources, sweep.failure
    return {"num_workers": r.num_workers, "use_gpu": r.gpus_per_worker > 0, "cpus_per_worker": r.cpus_per_worker,
            "gpus_per_worker": r.gpus_per_worker or 1.0, "max_failures": f.max_failures,
            "keep_checkpoints": f.keep_checkpoints}


def make_searcher(sweep: ResolvedSweep, storage_url: str, study_name: str) -> Any:
    """OptunaSearch on the study `open_study` created at `storage_url` (by default an sqlite file beside the
    results, which optuna-dashboard opens; a shared database with --optuna-storage)."""
    from ray.tune.search.optuna import OptunaSearch

    class FinalResultsSearch(OptunaSearch):
        """OptunaSearch that tells the study a trial's final report only (the one with the test split's `wer`).

        Intermediate reports (validation WER at `eval.every`) carry the objective too, but a trial the scheduler
        stopped after one of them did not finish: the study records it PRUNED, not COMPLETE with an early value.
        """

        def on_trial_result(self, trial_id: str, result: dict) -> None:
            if "wer" in result and not self.finished_in_study(trial_id):
                super().on_trial_result(trial_id, result)

        def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
            if not self.finished_in_study(trial_id):
                super().on_trial_complete(trial_id, result if result and "wer" in result else None, error)

        def finished_in_study(self, trial_id: str) -> bool:
            """Whether the study already holds this trial finished. Tune saves its own state at most every 10 s, so
            a sweep whose driver was lost just after a trial ended resumes that trial, which reports its result
            again (MLflow logs nothing more for it). Told twice, Optuna raises and the resumed sweep ends."""
            ot_trial = self._ot_trials.get(trial_id)
            if ot_trial is None:
                return False
            held = self._ot_study.get_trials(deepcopy=False)
            return any(t.number == ot_trial.number and t.state.is_finished() for t in held)

    metrics, modes = sweep.objectives
    storage = studies.open_storage(storage_url)
    return FinalResultsSearch(
        space=optuna_distributions(sweep), metric=metrics if len(metrics) > 1 else metrics[0],
        mode=modes if len(modes) > 1 else modes[0], sampler=make_sampler(sweep), study_name=study_name, storage=storage,
    )


def make_sampler(sweep: ResolvedSweep) -> Any:
    import optuna

    s = sweep.searcher
    if s.type == "grid":
        return optuna.samplers.GridSampler({k: list(p.values) for k, p in sweep.space.items()}, seed=s.seed)
    if s.type == "random":
        return optuna.samplers.RandomSampler(seed=s.seed)
    if s.type == "nsga2":
        from platform.optuna_samplers import NSGAIISampler

        return NSGAIISampler(seed=s.seed, population_size=s.population_size)
    return optuna.samplers.TPESampler(seed=s.seed, n_startup_trials=s.n_startup_trials)


def optuna_distributions(sweep: ResolvedSweep) -> dict[str, Any]:
    import optuna.distributions as d

    out: dict[str, Any] = {}
    for key, p in sweep.space.items():
        if p.type in ("choice", "grid"):
            out[key] = d.CategoricalDistribution(p.values)
        elif p.type == "int":
            out[key] = d.IntDistribution(int(p.low), int(p.high), log=p.log)
        else:
            out[key] = d.FloatDistribution(float(p.low), float(p.high), log=p.type == "loguniform")
    return out


def make_scheduler(sweep: ResolvedSweep) -> Any:
    if sweep.scheduler.type == "none":
        return None
    from ray.tune.schedulers import ASHAScheduler

    s = sweep.scheduler
    max_t = s.max_t or (_resolved_or_none(sweep) or {}).get("optim", {}).get("max_steps") or 100
    # Time is the training step the trial reports, not Tune's count of reports: a trial that Ray Train
    # restarted from a checkpoint reports some steps twice, and its rungs must not move.
    return ASHAScheduler(time_attr="step", metric=s.metric, mode=s.mode, grace_period=s.grace_period,
                         reduction_factor=s.reduction_factor, max_t=max_t)


# --------------------------------------------------------------------------------------------- 3. conclude


def conclude(run: SweepRun, started: float, *, register: bool = True) -> int:
    """The sweep's records and report, what to do next, and the exit status: 130 when trials were left unfinished
    (the parent run stays open for --resume), else the parent run is finished, 1 when some trials failed, 0."""
    sweep, c, uri, parent = run.sweep, run.client, run.uri, run.parent
    name_objectives(run.study_storage, run.study_name, sweep.objectives[0])
    interrupted = _mark_unfinished(c, uri, parent, sweep.num_samples)
    log_sweep_cost(c, uri, parent, started)
    print(report.sweep_report(uri, parent, run.run_dir), flush=True)
    if run.log_file is not None:
        ray_logs = console.copy_ray_logs(run.run_dir)
        where = f"{run.log_file}" + (f" and {ray_logs}/" if ray_logs else "")
        print(f"the libraries' own logs (Ray, Tune, Optuna, MLflow, transformers): {where} (--verbose shows them live)",
              flush=True)
    if interrupted:
        print(f"the sweep stopped before every trial finished; continue it with --resume "
              f"(python -m platform.sweep {sweep.name} --resume)", flush=True)
        return EXIT_INTERRUPTED
    failed = failed_trials(uri, parent)
    c.set_terminated(parent, "FINISHED")
    if register and len(failed) < sweep.num_samples:  # the best trial, by validation, in the Model Registry
        registry.register_best(parent, sweep.name, uri)
    print_next_steps(run, started, any_finished=len(failed) < sweep.num_samples)
    if failed:
        c.set_tag(parent, "failed_trials", str(len(failed)))
        print(failure_summary(failed, sweep.num_samples), file=sys.stderr, flush=True)
        return EXIT_FAILED_TRIALS
    return EXIT_OK


def print_next_steps(run: SweepRun, started: float, *, any_finished: bool) -> None:
    """How long it took, how to browse it in MLflow, and (when a trial finished) how to use the best trial."""
    minutes = (time.time() - started) / 60
    objectives, modes = run.sweep.objectives
    exp_id = run.client.get_run(run.parent).info.experiment_id
    print(f"done in {minutes:.1f} min. Browse it: mlflow ui --backend-store-uri {run.uri}", flush=True)
    print(f"  then open http://127.0.0.1:5000/#{report_render.trials_link(exp_id, objectives[0], modes[0])}", flush=True)
    if any_finished:
        print(f"use the best trial: python -m platform.transcribe {run.parent} FILES_OR_FOLDER... | "
              f"python -m platform.export {run.parent} OUT_DIR", flush=True)


def name_objectives(storage_url: str, study_name: str, metrics: list[str]) -> None:
    """Name the study's objectives after the metrics (optuna-dashboard shows `wer`, not `Objective 0`)."""
    import warnings

    import optuna

    try:
        with warnings.catch_warnings():  # "experimental since v3.2", printed at the end of every sweep
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.load_study(study_name=study_name, storage=storage_url).set_metric_names(list(metrics))
    except Exception:  # noqa: BLE001 - only the dashboard's labels are lost
        pass


def _mark_unfinished(c: Any, uri: str, parent: str, expected: int) -> bool:
    """After an interrupted run (SIGINT), mark trials that did not finish KILLED; True if there were any.

    Tune saves its state and returns on SIGINT; `--resume` later continues those trials in their own runs.
    """
    rows = trial_rows(uri, parent)
    unfinished = [r for r in rows if r["status"] in ("RUNNING", "SCHEDULED")]
    for row in unfinished:
        c.set_terminated(row["run_id"], "KILLED")
    return bool(unfinished) or len(rows) < expected


def log_sweep_cost(c: Any, uri: str, parent: str, started: float) -> None:
    """The sweep's totals on its parent run: wall time (this driver's, since the command started), the trials'
    summed wall time and GPU-hours, and their GPU energy where it was measured."""
    rows = trial_rows(uri, parent)
    metered = [r for r in rows if r.get("energy_j") is not None]
    tracking.log_metrics(c, parent, {
        "sweep_wall_s": time.time() - started,
        "sweep_trial_s": sum(r.get("trial_wall_s") or 0.0 for r in rows),
        "sweep_gpu_hours": sum(r.get("gpu_hours") or 0.0 for r in rows),
        **({"sweep_energy_j": sum(r["energy_j"] for r in metered)} if metered else {}),
    }, 0)


def failed_trials(uri: str, parent: str) -> list[dict[str, Any]]:
    """The sweep's trials that MLflow records FAILED (each with its `error` tag)."""
    return [r for r in trial_rows(uri, parent) if r["status"] == "FAILED"]


def failure_summary(failed: list[dict[str, Any]], total: int) -> str:
    """How many trials failed and why, one line each (the error's last line, as the run's `error` tag holds it)."""
    lines = [f"{len(failed)} of {total} trials failed (exit status 1):"]
    lines += [f"  {r['trial']}: {r['error'] or 'no error recorded'}" for r in failed]
    return "\n".join(lines)


def _save(run_dir: Path, state: dict[str, Any]) -> None:
    tmp = run_dir / (STATE_FILE + ".tmp")
    tmp.write_text(json.dumps(state, indent=2))
    tmp.replace(run_dir / STATE_FILE)
