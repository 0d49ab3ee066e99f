"""Run a sweep: `python -m platform.sweep NAME` (see --help).

Reads and validates search_spaces/NAME.yaml, picks a preset, and runs Ray Tune with an Optuna
searcher over Ray Train trials; every trial is recorded in MLflow, the untuned model is measured
once per machine (then cached; --fresh-baseline measures it again), and a summary table and plot are
written at the end. --resume continues an interrupted sweep.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

import yaml

from platform import spaces
from platform.cluster import (
    ROOT,
    ClusterError,
    check_ray_address,
    check_storage,
    cluster_gpus,
    connect_ray,
    requested_address,
)
from platform.spaces import ResolvedSweep, SpaceError
from trainables.blocks.config import read_yaml, redact


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m platform.sweep", description=__doc__.split("\n\n")[0])
    p.add_argument("name", nargs="?", help="sweep name (search_spaces/NAME.yaml) or a path to a YAML file")
    p.add_argument("--list", action="store_true", help="list the sweeps there are")
    p.add_argument("--preset", choices=spaces.PRESETS, help="default: gpu if the Ray cluster has GPUs, else local")
    p.add_argument("--num-samples", type=int, help="override the number of trials")
    p.add_argument("--max-concurrent", type=int, help="override the number of trials running at once")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a fixed config value by dotted key, e.g. --set optim.max_steps=20 (repeatable)")
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI or sqlite:///mlflow.db)")
    p.add_argument("--storage", help="where Ray Tune keeps results and the Optuna study (default: ./ray_results; s3://... on a cluster)")
    p.add_argument("--optuna-storage", metavar="URL",
                   help="keep the Optuna study in this database, e.g. postgresql://USER@HOST:5432/optuna, which any "
                        "machine reaching it can open (default: an sqlite file beside the sweep's state)")
    p.add_argument("--resume", action="store_true", help="continue the latest interrupted run of this sweep")
    p.add_argument("--fresh-baseline", action="store_true",
                   help="measure the untuned model again, even where this machine has it cached, and cache the new one")
    p.add_argument("--rehearse", action="store_true",
                   help="run the gpu preset on CPU, offline: each hub model and data set swapped for an offline "
                        "stand-in of its kind, steps and items cut to a few, the rest of its path unchanged")
    p.add_argument("--dry-run", action="store_true", help="validate and print the plan without starting Ray")
    p.add_argument("--no-register", action="store_true",
                   help="do not register the best trial in MLflow's Model Registry under the sweep's name")
    p.add_argument("--verbose", action="store_true",
                   help="show the libraries' own logs (Ray's workers, Tune, Optuna, MLflow) live instead of in a file")
    return p.parse_args(argv)


def parse_sets(items: list[str]) -> dict[str, Any]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise SpaceError(f"--set {item!r}: expected KEY=VALUE")
        try:
            out[key.strip()] = read_yaml(value)  # each value as its field takes it: spaces.resolve
        except yaml.YAMLError:
            raise SpaceError(f"--set {key}: value {value!r} is not valid YAML") from None
    return out


def choose_preset(args: argparse.Namespace) -> tuple[str, str]:
    """(preset, why). Joining a cluster happens here, before the full validation of the preset."""
    if args.preset:
        return args.preset, "--preset"
    if connect_ray():
        gpus = cluster_gpus()
        return ("gpu" if gpus > 0 else "local"), f"the Ray cluster has {gpus:g} GPUs"
    import torch

    has_cuda = torch.cuda.is_available()
    return ("gpu" if has_cuda else "local"), ("this machine has CUDA" if has_cuda else "no GPU here")


def checkpoint_every(sweep: ResolvedSweep) -> str:
    """optim.checkpoint_every as the trials will have it (the fixed config's, else the method's default)."""
    from trainables import load_method
    from trainables.blocks.config import flatten

    value = flatten(sweep.config).get("optim.checkpoint_every")
    if value is None:
        value = load_method(sweep.method).CONFIG().optim.checkpoint_every
    return str(value)


def generations(sweep: ResolvedSweep) -> str:
    """NSGA-II's generations in this sweep: its first is random, so one generation is a random search."""
    if sweep.searcher.type != "nsga2":
        return ""
    population = sweep.searcher.population_size
    n = -(-sweep.num_samples // population)
    if n < 2:
        return f", population {population}: 1 generation, sampled at random (a random search)"
    return f", population {population}: {n} generations, the first at random"


def plan_text(sweep: ResolvedSweep, why: str, fresh_baseline: bool = False) -> str:
    from platform.baselines import plan_line
    from platform.cluster import plan_line as cluster_plan_line

    objectives, modes = sweep.objectives
    lines = [
        f"sweep     {sweep.name}  ({spaces._relative(sweep.path)})",
        f"method    {sweep.method}",
        f"preset    {sweep.preset}  ({why})",
        f"objective {', '.join(f'{m} ({d})' for m, d in zip(objectives, modes, strict=True))}",
        f"searcher  optuna {sweep.searcher.type} (seed {sweep.searcher.seed})" + generations(sweep),
        f"scheduler {sweep.scheduler.type}" + (f" on {sweep.scheduler.metric} (grace {sweep.scheduler.grace_period} steps, "
                                               f"reduction {sweep.scheduler.reduction_factor:g})"
                                               if sweep.scheduler.type != "none" else ""),
        f"faults    up to {sweep.failure.max_failures if sweep.failure.max_failures >= 0 else 'any number of'} "
        f"restart(s) per trial from its latest checkpoint (every {checkpoint_every(sweep)} steps; "
        f"{sweep.failure.keep_checkpoints} kept)",
        f"trials    {sweep.num_samples}, {sweep.max_concurrent_trials} at a time",
        f"resources {sweep.resources.num_workers} Ray Train worker(s) x {sweep.resources.cpus_per_worker:g} CPU"
        f" + {sweep.resources.gpus_per_worker:g} GPU",
        f"ray       {cluster_plan_line()}",
        f"baseline  {plan_line(sweep, fresh_baseline) if sweep.baseline else 'none'}",
        *([f"ablation  {sweep.ablation.factor} against {sweep.ablation.baseline!r}, {sweep.ablation.repeats} seed(s) per level"]
          if sweep.ablation else []),
        "space:",
        *[f"  {k}: {json.dumps({f: v for f, v in vars(p).items() if v not in (None, False) and f != 'named'})}"
          + (" (named levels: config overrides each)" if p.named else "") for k, p in sweep.space.items()],
        "fixed config:",
        *["  " + line for line in yaml.safe_dump(redact(sweep.config), sort_keys=True).splitlines()],
    ]
    return "\n".join(lines)


def list_sweeps() -> str:
    rows = []
    for name in spaces.available():
        try:
            description = spaces.load(spaces.find(name)).description
        except SpaceError as exc:
            description = f"(invalid: {exc})"
        rows.append(f"{name:20} {description}")
    return "\n".join(rows) or "(no sweeps in search_spaces/)"


def preflight(args: argparse.Namespace) -> str:
    """The tracking store, the results folder, the Optuna study's database and a cluster named by RAY_ADDRESS,
    checked before Ray or any trial starts; the tracking URI.

    Raises SpaceError or ClusterError with one line naming what is wrong (an unreachable server or cluster fails
    within seconds)."""
    from platform import tracking

    uri = args.tracking_uri or tracking.default_tracking_uri(ROOT)
    flag = "--tracking-uri" if args.tracking_uri else ("MLFLOW_TRACKING_URI" if "MLFLOW_TRACKING_URI" in os.environ
                                                       else "tracking store")
    try:
        tracking.check_tracking_uri(uri)
    except tracking.TrackingUnreachable as exc:
        raise SpaceError(f"{flag} {exc}") from None
    problem = check_storage(args.storage)
    if problem:
        raise SpaceError(f"--storage: {problem}" if args.storage else problem)
    if args.optuna_storage is not None:
        from platform import studies

        try:
            studies.check(args.optuna_storage)
        except studies.StudyStorageError as exc:
            raise SpaceError(f"--optuna-storage {exc}") from None
    if not args.dry_run and requested_address():
        problem = check_ray_address()
        if problem:
            raise SpaceError(problem)
        connect_ray()  # joined now, so a cluster that refuses the sweep (ClusterError) stops it before the plan
    return uri


def main(argv: list[str] | None = None) -> int:
    """Exit status: 0 when every trial finished, 1 when any failed, 2 for bad input, 130 after Ctrl-C."""
    try:
        return _main(argv)
    except KeyboardInterrupt:
        print("interrupted; continue with --resume", file=sys.stderr)
        return 130


def _main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.list:
        print(list_sweeps())
        return 0
    if not args.name:
        print("error: name a sweep; there are: " + ", ".join(spaces.available()), file=sys.stderr)
        return 2
    try:
        path = spaces.find(args.name)
        overrides = parse_sets(args.set)
        spaces.load(path)  # the file's own mistakes, before anything else happens
        for flag, value in (("--num-samples", args.num_samples), ("--max-concurrent", args.max_concurrent)):
            if value is not None and value < 1:
                raise SpaceError(f"{flag}: must be at least 1, got {value}")
        if args.rehearse and args.preset not in (None, "gpu"):
            raise SpaceError(f"--rehearse rehearses the gpu preset; got --preset {args.preset}")
        uri = preflight(args)
        if args.rehearse:
            preset, why = "gpu", "--rehearse: on CPU, offline stand-ins"
        elif args.dry_run:
            preset, why = (args.preset, "--preset") if args.preset else ("local", "--dry-run defaults to local; pass --preset gpu to check it")
        else:
            preset, why = choose_preset(args)
        rewrite = None
        if args.rehearse:
            from platform.rehearsal import rehearse as rewrite
        sweep = spaces.resolve(path, preset, overrides, rewrite=rewrite)
        if args.num_samples:
            sweep.num_samples = args.num_samples
        if args.max_concurrent:
            sweep.max_concurrent_trials = args.max_concurrent
        data_warnings = spaces.objective_warnings(sweep) + spaces.check_data(sweep)
    except (SpaceError, ClusterError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(plan_text(sweep, why, args.fresh_baseline), flush=True)
    if sweep.rehearsal:
        print(f"rehearse  {sweep.rehearsal}", flush=True)
    for warning in data_warnings:
        print(warning, file=sys.stderr, flush=True)
    if args.dry_run:
        from platform.fetches import fetches_text, hub_fetches

        print(fetches_text(hub_fetches(sweep)), flush=True)
        return 0
    from platform.runner import run_sweep

    return run_sweep(sweep, overrides=sweep.overrides, why=why, tracking_uri=uri, storage=args.storage,
                     resume=args.resume, started=time.time(), fresh_baseline=args.fresh_baseline, verbose=args.verbose,
                     register=not args.no_register, optuna_storage=args.optuna_storage)


if __name__ == "__main__":
    sys.exit(main())
