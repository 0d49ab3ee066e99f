"""How a sweep's cost grows with its number of trials N and with the trials running at once C.

    .venv/bin/python benchmarks/sweep_cost.py [--sweep qlora_rank] [--preset local] [--trials 1,2,4,8]
                                              [--concurrency 1,2] [--steps N] [--baseline] [--real]
                                              [--cpus-per-worker 1] [--plot sweep_cost.png] [--json PATH]
    .venv/bin/python benchmarks/sweep_cost.py --trials 1,2 --concurrency 1 --steps 2   # what the test runs

For every N in --trials and every C in --concurrency with C <= N, `python -m platform.sweep` runs once as a
subprocess, one after the other, each with its own MLflow store (`--tracking-uri sqlite:///...`) and `--storage`
in a fresh temporary folder, and a private Ray (`RAY_ADDRESS=local`). Its sweep file is the sweep's, cut to one
trial by `overhead.one_trial_file` (the first value of each searched key, e.g. lora.r = 1) and then searched by a
random searcher N times (`--num-samples N --max-concurrent C`): N identical trials, each as costly as the others.
Every worker gets --cpus-per-worker CPUs (default 1, in every run, so that 2 trials fit on 2 cores and only C
changes between runs of the same N). The sweep's untuned-model baseline is left out unless --baseline, so the
numbers measure trials.

By default the model is a random 2+2-layer Whisper (`overhead.build_tiny_whisper`) on overhead.py's tiny
espeak-smoke data with 3 steps; --real uses the preset's model and data (and its step budget unless --steps).

Measured per run: the sweep's wall time (process start to exit), its exit status, the time from the start to the
first trial's MLflow run and to the first training step shown in the sweep's console (to within --progress-s),
and each trial's `trial_wall_s` (logged to MLflow by the platform). Printed: a table (N, C, wall, wall / N, mean
trial wall, the first step, exit, speedup of C over C = 1 at the same N), a least-squares fit per C of
wall = fixed_s + N x per_trial_s, and a PNG plot of wall against N (one line per C, with its fit) at --plot. The
last line is `RESULT {json}` with every number (also written to --json).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

sys.path.insert(0, str(Path(__file__).resolve().parent))
# The sibling benchmark's helpers, importable once its folder is on the path.
from overhead import RESULT_PREFIX, ROOT, ROW_RE, STEP_RE, one_trial_file, run_console, sweep_command, trial_spec  # noqa: E402


def ints(text: str) -> list[int]:
    """A comma-separated list of positive integers, sorted and without repeats."""
    values = sorted({int(x) for x in text.split(",") if x.strip()})
    if not values or values[0] < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers separated by commas, got {text!r}")
    return values


def cost_file(spec: dict[str, Any], folder: Path, cpus_per_worker: float) -> Path:
    """The one-trial sweep file (overhead.one_trial_file), with a random searcher, so that --num-samples N runs
    N trials of the same values, and `cpus_per_worker` CPUs per worker (in the file and every preset)."""
    import yaml

    path = one_trial_file(spec, folder)
    data = yaml.safe_load(path.read_text())
    data["searcher"] = {"type": "random", "seed": 0}
    data["scheduler"] = {"type": "none"}
    resources = {**(data.get("resources") or {}), "cpus_per_worker": cpus_per_worker}
    data["resources"] = resources
    for preset in (data.get("presets") or {}).values():
        preset.pop("searcher", None)
        preset["resources"] = {**(preset.get("resources") or resources), "cpus_per_worker": cpus_per_worker}
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def first_step_at(lines: list[tuple[float, str]]) -> float | None:
    """When the sweep's console first showed a running trial with a training step done."""
    for t, line in lines:
        row = ROW_RE.match(line)
        if row is not None and row.group(1) == "RUNNING" and STEP_RE.search(line):
            return t
    return None


def read_trials(uri: str, experiment: str) -> list[dict[str, Any]]:
    """The sweep's trial runs in MLflow: status, start time (s since the epoch), trial_wall_s, artifact URI."""
    from mlflow.tracking import MlflowClient

    c = MlflowClient(uri)
    exp = c.get_experiment_by_name(experiment)
    if exp is None:
        return []
    return [{"status": r.info.status, "start": r.info.start_time / 1000,
             "trial_wall_s": r.data.metrics.get("trial_wall_s"), "artifact_uri": r.info.artifact_uri}
            for r in c.search_runs([exp.experiment_id]) if "mlflow.parentRunId" in r.data.tags]


def drop_artifacts(uri: str, experiment: str) -> None:
    """Remove the run folders this store's runs left under the repository's ./mlruns (MLflow's default artifact
    root for an sqlite store): the store itself is temporary. Only these runs' own folders, by run id."""
    from mlflow.tracking import MlflowClient

    c = MlflowClient(uri)
    exp = c.get_experiment_by_name(experiment)
    if exp is None:
        return
    root = (ROOT / "mlruns").resolve()
    for r in c.search_runs([exp.experiment_id]):
        parsed = urlparse(r.info.artifact_uri)
        if parsed.scheme not in ("", "file"):
            continue
        run_dir = Path(unquote(parsed.path)).resolve().parent
        if run_dir.name == r.info.run_id and root in run_dir.parents:
            shutil.rmtree(run_dir, ignore_errors=True)


def run_one(spec: dict[str, Any], work: Path, n: int, c: int, cpus_per_worker: float,
            progress_s: float) -> dict[str, Any]:
    """One sweep of n trials, c at a time, in `work` (a fresh folder): its wall time, exit status and trials."""
    path = cost_file(spec, work / "sweep", cpus_per_worker)
    cmd, env, uri = sweep_command(spec, path, work, progress_s)
    cmd += ["--num-samples", str(n), "--max-concurrent", str(c)]
    lines, rc, t0, t1 = run_console(cmd, env, work / "sweep.stderr")
    trials = read_trials(uri, spec["sweep"]) if (work / "mlflow.db").exists() else []
    first_step = first_step_at(lines)
    walls = [t["trial_wall_s"] for t in trials if t["trial_wall_s"] is not None]
    out = {
        "n": n, "c": c, "rc": rc, "wall_s": t1 - t0,
        "first_trial_start_s": min(t["start"] for t in trials) - t0 if trials else None,
        "first_step_s": first_step - t0 if first_step is not None else None,
        "trials_finished": sum(t["status"] == "FINISHED" for t in trials),
        "trial_wall_s": walls, "mean_trial_wall_s": sum(walls) / len(walls) if walls else None,
    }
    if rc != 0:
        out["console_tail"] = [x for _, x in lines[-30:]]
        out["stderr_tail"] = (work / "sweep.stderr").read_text()[-3000:]
    if (work / "mlflow.db").exists():
        drop_artifacts(uri, spec["sweep"])
    return out


def fit_line(points: list[tuple[int, float]]) -> tuple[float, float] | None:
    """Least-squares (fixed, per_trial) of wall = fixed + N x per_trial; None with fewer than two distinct N."""
    if len({n for n, _ in points}) < 2:
        return None
    k = len(points)
    mean_n = sum(n for n, _ in points) / k
    mean_w = sum(w for _, w in points) / k
    slope = sum((n - mean_n) * (w - mean_w) for n, w in points) / sum((n - mean_n) ** 2 for n, _ in points)
    return mean_w - slope * mean_n, slope


def fmt(x: float | None, width: int = 8, digits: int = 1) -> str:
    return f"{'-':>{width}}" if x is None else f"{x:{width}.{digits}f}"


def summarise(runs: list[dict[str, Any]]) -> tuple[dict[int, dict[str, Any]], dict[tuple[int, int], float]]:
    """The fit per C (over the runs that exited 0) and the speedup of each C > 1 over C = 1 at the same N."""
    ok = [r for r in runs if r["rc"] == 0]
    fits: dict[int, dict[str, Any]] = {}
    for c in sorted({r["c"] for r in runs}):
        points = [(r["n"], r["wall_s"]) for r in ok if r["c"] == c]
        fit = fit_line(points)
        fits[c] = {"fixed_s": fit[0] if fit else None, "per_trial_s": fit[1] if fit else None, "points": len(points)}
    serial = {r["n"]: r["wall_s"] for r in ok if r["c"] == 1}
    speedups = {(r["n"], r["c"]): serial[r["n"]] / r["wall_s"] for r in ok if r["c"] > 1 and r["n"] in serial}
    return fits, speedups


def print_report(runs: list[dict[str, Any]], fits: dict[int, dict[str, Any]], speedups: dict[tuple[int, int], float],
                 title: str) -> None:
    print(f"\n{title}")
    print(f"{'N':>4} {'C':>3} {'wall s':>8} {'s/trial':>8} {'trial_wall_s':>13} {'first step s':>13} {'exit':>5} "
          f"{'speedup':>8}")
    for r in runs:
        print(f"{r['n']:>4} {r['c']:>3} {fmt(r['wall_s'])} {fmt(r['wall_s'] / r['n'])} "
              f"{fmt(r['mean_trial_wall_s'], 13)} {fmt(r['first_step_s'], 13)} {r['rc']:>5} "
              f"{fmt(speedups.get((r['n'], r['c'])), 8, 2)}")
    print("  s/trial = wall / N; trial_wall_s = the trials' mean (MLflow); first step = start -> the console's first "
          "trained step; speedup = wall at C = 1 / wall at this C, same N")
    for c, fit in fits.items():
        if fit["fixed_s"] is None:
            print(f"fit C={c}: fewer than two N that finished; no fit")
        else:
            print(f"fit C={c}: wall = fixed + N x per_trial over {fit['points']} runs; "
                  f"fixed_s: {fit['fixed_s']:.1f}  per_trial_s: {fit['per_trial_s']:.1f}")


def plot(runs: list[dict[str, Any]], fits: dict[int, dict[str, Any]], path: Path, title: str) -> None:
    """Wall time against N, one colour per C: the measured points and the fitted line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for i, (c, fit) in enumerate(fits.items()):
        colour = f"C{i}"
        pts = sorted((r["n"], r["wall_s"]) for r in runs if r["c"] == c and r["rc"] == 0)
        if pts:
            ax.plot([n for n, _ in pts], [w for _, w in pts], "o-", color=colour, label=f"C = {c} (measured)")
        if fit["fixed_s"] is not None and pts:
            xs = [0, max(n for n, _ in pts)]
            ax.plot(xs, [fit["fixed_s"] + x * fit["per_trial_s"] for x in xs], "--", color=colour, alpha=0.7,
                    label=f"C = {c} fit: {fit['fixed_s']:.0f} s + N x {fit['per_trial_s']:.0f} s")
    ax.set_xlabel("trials N")
    ax.set_ylabel("sweep wall time (s)")
    ax.set_xlim(left=0)
    ax.set_ylim(bottom=0)
    ax.set_title(textwrap.fill(title, 90), fontsize=9)  # the run description is long: wrap it
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sweep", default="qlora_rank", help="sweep name or YAML path (default qlora_rank)")
    p.add_argument("--preset", default="local", choices=["local", "gpu"])
    p.add_argument("--trials", type=ints, default=[1, 2, 4, 8], metavar="N,...", help="numbers of trials (default 1,2,4,8)")
    p.add_argument("--concurrency", type=ints, default=[1, 2], metavar="C,...",
                   help="trials at once (default 1,2); only C <= N is run")
    p.add_argument("--value", action="append", default=[], metavar="KEY=VALUE",
                   help="every trial's value of a searched key (default: its first value)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a fixed config value")
    p.add_argument("--steps", type=int, help="optim.max_steps (default: 3 on the tiny model, the preset's with --real)")
    p.add_argument("--real", action="store_true", help="the preset's model and data instead of the tiny ones")
    p.add_argument("--model", help="model asset or folder, on the tiny data (instead of a freshly built random one)")
    p.add_argument("--baseline", action="store_true", help="measure the untuned model once per sweep too")
    p.add_argument("--cpus-per-worker", type=float, default=1.0, help="CPUs per trial's worker in every run (default 1)")
    p.add_argument("--progress-s", type=float, default=2.0, help="the sweeps' console refresh: the first step's resolution")
    p.add_argument("--plot", type=Path, default=Path("sweep_cost.png"), help="the PNG (default ./sweep_cost.png)")
    p.add_argument("--json", type=Path, help="also write the RESULT object here")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    plot_path = args.plot.resolve()
    pairs = [(n, c) for n in args.trials for c in args.concurrency if c <= n]
    if not pairs:
        raise SystemExit("no run: every --concurrency is above every --trials")
    cores = os.cpu_count() or 1
    if max(c for _, c in pairs) * args.cpus_per_worker > cores:
        print(f"warning: {max(c for _, c in pairs)} trials x {args.cpus_per_worker:g} CPUs is more than this "
              f"machine's {cores} cores; Ray will queue trials, so C trials will not all run at once", flush=True)
    work = Path(tempfile.mkdtemp(prefix="sweep-cost-"))
    try:
        spec_args = argparse.Namespace(sweep=args.sweep, preset=args.preset, value=args.value, set=args.set,
                                       steps=args.steps, model=args.model, tiny=not args.real,
                                       no_baseline=not args.baseline, fresh_baseline=False)
        spec = trial_spec(spec_args, work)
        steps = spec["config"].get("optim", {}).get("max_steps")
        model = "the preset's model" if args.real else (args.model or "a random 2+2-layer Whisper")
        title = (f"sweep {spec['sweep']}, preset {spec['preset']}, {model}, {json.dumps(spec['sampled'])}, "
                 f"{steps} steps, {args.cpus_per_worker:g} CPU per worker, baseline {'yes' if spec['baseline'] else 'no'}")
        print(f"[{time.strftime('%H:%M:%S')}] {title}; {len(pairs)} sweep(s) to run", flush=True)
        runs = []
        for i, (n, c) in enumerate(pairs, 1):
            print(f"[{time.strftime('%H:%M:%S')}] run {i}/{len(pairs)}: N={n} C={c} ...", flush=True)
            run = run_one(spec, work / f"n{n}-c{c}", n, c, args.cpus_per_worker, args.progress_s)
            runs.append(run)
            print(f"[{time.strftime('%H:%M:%S')}] run {i}/{len(pairs)}: N={n} C={c} done in {run['wall_s']:.1f} s, "
                  f"exit {run['rc']}, {run['trials_finished']}/{n} trials finished", flush=True)
            if run["rc"] != 0:
                print("\n".join(["  " + x for x in run["console_tail"][-10:]] + [run["stderr_tail"][-1500:]]), flush=True)
        fits, speedups = summarise(runs)
        print_report(runs, fits, speedups, title)
        plot(runs, fits, plot_path, title)
        print(f"plot: {plot_path}")
        out = {"spec": {k: spec[k] for k in ("sweep", "preset", "method", "sampled", "overrides", "baseline")},
               "steps": steps, "real_model": args.real, "cpus_per_worker": args.cpus_per_worker,
               "runs": runs, "fits": {str(c): f for c, f in fits.items()},
               "speedups": [{"n": n, "c": c, "speedup": s} for (n, c), s in speedups.items()],
               "plot": str(plot_path)}
        if args.json:
            args.json.write_text(json.dumps(out, indent=2))
        print(RESULT_PREFIX + json.dumps(out), flush=True)
        return 0 if all(r["rc"] == 0 for r in runs) else 1
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
