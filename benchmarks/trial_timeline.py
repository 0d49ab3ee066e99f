"""Where a sweep's per-trial start and finish go, read from Ray's own task events.

    .venv/bin/python benchmarks/trial_timeline.py [--trials 3] [--sweep qlora_rank] [--preset local]
                                                  [--real] [--steps N] [--set KEY=VALUE] [--json PATH]

Runs `platform.sweep` in this process on N identical trials, one at a time (the sweep file cut to one trial by
`overhead.one_trial_file`, searched N times by a random searcher, no baseline, its own MLflow store and storage in a
temporary folder, a private Ray), on a random 2+2-layer Whisper with 3 steps unless --real (the preset's model,
data and step budget). Ray records when each of its tasks and actors was submitted, started and finished; after
the sweep, with Ray still up, the script reads those events (`ray.util.state.list_tasks`) and splits each trial into:

- actor:      the trial function's actor started (0 where Tune reused the previous trial's actor);
- trial fn:   the trial function up to asking for its Train run (imports, the TorchTrainer built);
- controller: Ray Train's controller actor started and set up;
- workers:    the worker group started (the worker's process, Ray Train's helper actors) up to the train loop;
- train loop: the method in the worker (imports, data, model load, steps, evaluation, artifacts);
- finish:     the Train run's end to the trial's end in Tune.

Printed: one row per trial (seconds), the mean over trials after the first (the first also pays for Ray's start),
and the last line `RESULT {json}`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from overhead import RESULT_PREFIX, ROOT, sweep_command, trial_spec  # noqa: E402 - the sibling benchmarks' helpers
from sweep_cost import cost_file  # noqa: E402

PHASES = ("actor", "trial fn", "controller", "workers", "train loop", "finish")


def events(task: Any) -> dict[str, float]:
    """A task's state -> when it first entered that state (seconds since the epoch)."""
    out: dict[str, float] = {}
    for e in task.get("events") or []:
        out.setdefault(e["state"], e["created_ms"] / 1000)
    return out


def split_trials(tasks: list[dict[str, Any]]) -> list[dict[str, float]]:
    """Each trial's phases (PHASES, seconds) from Ray's task records (dicts with `name` and `events`), in order.

    One Train controller per trial anchors it: the trial function's call running when the controller was asked
    for, the function actor's start just before that call (if a new actor), the first Train worker set up after
    the controller, the worker's train loop, and the last call of the trial function ending after the controller."""
    def named(suffix: str) -> list[dict[str, float]]:
        return sorted((events(t) for t in tasks if t["name"].endswith(suffix) and events(t)),
                      key=lambda e: min(e.values()))

    calls = [e for e in named(".train") if "RUNNING" in e and "FINISHED" in e]
    actors = [e for e in named("ImplicitFunc.__init__") if "FINISHED" in e]
    inits = [e for e in named("TrainController.__init__") if "FINISHED" in e]
    runs = [e for e in named("TrainController.run") if "FINISHED" in e]
    loops = [e for e in named("RayTrainWorker.run_train_fn") if "RUNNING" in e]
    rows = []
    for init, run in zip(inits, runs, strict=False):
        asked = min(init.values())
        call = max((c for c in calls if c["RUNNING"] <= asked), key=lambda c: c["RUNNING"], default=None)
        loop = next((x for x in loops if x["RUNNING"] >= init["FINISHED"]), None)
        last = max((c for c in calls if c["RUNNING"] <= run["FINISHED"] + 1e-3), key=lambda c: c["RUNNING"], default=None)
        if call is None or loop is None or last is None:
            continue
        actor = next((a for a in actors if call["RUNNING"] - 5.0 <= a["FINISHED"] <= call["RUNNING"]), None)
        rows.append({
            "actor": actor["FINISHED"] - min(actor.values()) if actor else 0.0,
            "trial fn": asked - call["RUNNING"],
            "controller": init["FINISHED"] - asked,
            "workers": loop["RUNNING"] - init["FINISHED"],
            "train loop": run["FINISHED"] - loop["RUNNING"],
            "finish": max(0.0, last["FINISHED"] - run["FINISHED"]),
        })
    return rows


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--trials", type=int, default=3, help="identical trials, one at a time (default 3)")
    p.add_argument("--sweep", default="qlora_rank")
    p.add_argument("--preset", default="local", choices=["local", "gpu"])
    p.add_argument("--real", action="store_true", help="the preset's model and data (default: a random 2+2-layer Whisper)")
    p.add_argument("--steps", type=int, help="optim.max_steps (default: 3, or the preset's with --real)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a fixed config value")
    p.add_argument("--json", type=Path, help="also write the RESULT object here")
    args = p.parse_args(argv)
    if args.trials < 1:
        p.error(f"--trials: must be at least 1, got {args.trials}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="trial-timeline-"))
    try:
        steps = args.steps if args.steps is not None else (None if args.real else 3)
        ns = argparse.Namespace(sweep=args.sweep, preset=args.preset, tiny=not args.real, model=None, set=args.set,
                                value=[], steps=steps, no_baseline=True, fresh_baseline=False)
        spec = trial_spec(ns, work)
        path = cost_file(spec, work / "sweep", spec["resources"]["cpus_per_worker"])
        cmd = sweep_command(spec, path, work, 2.0)[0]
        os.environ.update({"RAY_ADDRESS": "local", "SPEECH_SWEEPS_PROGRESS_S": "2.0"})
        os.environ.pop("MLFLOW_TRACKING_URI", None)
        os.chdir(ROOT)
        import ray
        from ray.util.state import list_tasks

        from platform import sweep
        from platform.cluster import start_local_ray

        start_local_ray(log_to_driver=False)  # kept up after the sweep, so that its task events can be read
        t0 = time.time()
        rc = sweep.main(cmd[3:] + ["--num-samples", str(args.trials), "--max-concurrent", "1"])
        wall = time.time() - t0
        time.sleep(2.0)  # task events reach the state API within a second or so
        tasks = [{"name": t.name, "events": t.events} for t in
                 list_tasks(detail=True, limit=10_000, raise_on_missing_output=False)]
        ray.shutdown()
        rows = split_trials(tasks)
        print(f"\nsweep {spec['sweep']}, preset {spec['preset']}, {'the preset' if args.real else 'a random 2+2-layer'} "
              f"Whisper, {json.dumps(spec['sampled'])}, {args.trials} trials one at a time: exit {rc}, {wall:.1f} s")
        print("trial  " + "  ".join(f"{h:>10}" for h in PHASES) + "       total")
        for i, r in enumerate(rows, 1):
            print(f"{i:>5}  " + "  ".join(f"{r[h]:10.2f}" for h in PHASES) + f"  {sum(r.values()):10.2f}")
        later = rows[1:] or rows
        mean = {h: sum(r[h] for r in later) / len(later) for h in PHASES} if later else {}
        if mean:
            print(" mean  " + "  ".join(f"{mean[h]:10.2f}" for h in PHASES) + f"  {sum(mean.values()):10.2f}"
                  f"   ({'trials 2..N' if rows[1:] else 'one trial'})")
            outside = sum(v for k, v in mean.items() if k != "train loop")
            print(f"per trial outside the train loop: {outside:.2f} s")
        result = {"spec": {k: spec[k] for k in ("sweep", "preset", "sampled", "overrides")}, "rc": rc, "wall_s": wall,
                  "trials": rows, "mean_after_first": mean}
        if args.json:
            args.json.write_text(json.dumps(result, indent=2))
        print(RESULT_PREFIX + json.dumps(result), flush=True)
        return 0 if rc == 0 and len(rows) == args.trials else 1
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
