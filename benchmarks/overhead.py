"""What the platform costs on top of the training itself: one trial's config run three ways, timed from outside.

    .venv/bin/python benchmarks/overhead.py [--sweep qlora_rank] [--preset local] [--value KEY=VALUE]
                                            [--steps N] [--no-baseline] [--fresh-baseline] [--skip-trainer] [--skip-sweep] [--json PATH]
    .venv/bin/python benchmarks/overhead.py --tiny        # a random 2+2-layer Whisper, 3 steps (what the test runs)

(a) bare:    the method's `setup` -> `train` -> `finish` in one fresh Python process (no Ray, no MLflow);
(b) trainer: the same config through one Ray Train `TorchTrainer` (`trainables.blocks.launch.torch_trainer`), in a fresh
             process that starts a local Ray (as the sweep does) with the preset's resources;
(c) sweep:   `python -m platform.sweep` on a copy of the sweep file whose space is cut to that one trial (Tune +
             Train + MLflow, with the sweep's untuned-model baseline unless --no-baseline, read from the machine's
             baseline cache when an identical one was measured before unless --fresh-baseline), with its own MLflow
             store and --storage in a temporary folder.

Each runs in its own process, one after the other, so every wall time includes Python start-up and imports.
The trial is the first value of each searched key (the low end of a numeric range) unless --value says otherwise.

Where the time goes is measured from outside the training code: in (a) by wrapping the method module's data
loading, model loading, optimiser step and evaluation functions (timestamps only); in (b) by polling the
progress board the workers post to (step and decoding timestamps); in (c) from the sweep's console (its
progress table every --progress-s seconds), and the MLflow parent and trial runs' start, metric and end times.
The script prints a table of phases, per run, and the difference of each from (a); the last line is
`RESULT {json}` with every number.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULT_PREFIX = "RESULT "
CHILD_PREFIX = "BENCH_CHILD "
TINY = {  # --tiny: a few short utterances and steps on a random 2+2-layer Whisper
    "data": {"source": "espeak-smoke", "max_eval_items": 4, "max_val_items": 2, "max_train_items": 8},
    "eval": {"max_new_tokens": 4, "batch_size": 4},
    "optim": {"max_steps": 3, "warmup_steps": 1, "batch_size": 2},
}


# --------------------------------------------------------------------------- the trial


def build_tiny_whisper(out: Path, base: str = "whisper-tiny.en") -> Path:
    """A randomly initialised Whisper (2+2 layers, d_model 64: bitsandbytes' CPU 4-bit blocks are 64 wide) with
    `base`'s tokenizer and feature extractor, saved at fp16 in `out`."""
    import torch
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    from trainables import assets

    src = Path(assets.resolve_model(base))
    config = json.loads((src / "config.json").read_text())
    config.update(d_model=64, encoder_layers=2, decoder_layers=2, encoder_attention_heads=2, decoder_attention_heads=2,
                  encoder_ffn_dim=128, decoder_ffn_dim=128)
    config.pop("architectures", None)
    torch.manual_seed(0)
    WhisperForConditionalGeneration(WhisperConfig(**config)).half().save_pretrained(out)
    for f in src.iterdir():
        if f.suffix in (".json", ".txt") and f.name not in ("config.json", "inputs.json"):
            shutil.copy(f, out / f.name)
    return out


def parse_value(text: str) -> Any:
    """A --value or --set value as YAML reads it (1 -> int, 0.5 -> float, nf4 -> str)."""
    import yaml

    return yaml.safe_load(text)


def trial_spec(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """The one trial all three runs share: method, config, the sampled values, --set overrides, resources."""
    sys.path.insert(0, str(ROOT))
    from platform import spaces

    path = spaces.find(args.sweep)
    overrides: dict[str, Any] = {}
    if args.tiny:
        overrides.update({"data.source": TINY["data"]["source"], "data.max_eval_items": TINY["data"]["max_eval_items"],
                          "data.max_val_items": TINY["data"]["max_val_items"],
                          "data.max_train_items": TINY["data"]["max_train_items"],
                          "eval.max_new_tokens": TINY["eval"]["max_new_tokens"],
                          "eval.batch_size": TINY["eval"]["batch_size"],
                          "optim.batch_size": TINY["optim"]["batch_size"],
                          # the shortest window and no replayed corpus: a check of the path, kept small
                          "data.encoder_window_s": 0.0, "data.replay_source": None})
        model = args.model or str(build_tiny_whisper(work / "tiny-whisper"))
        overrides["model"] = model
    elif args.model:
        overrides["model"] = args.model
    for item in args.set:
        key, _, value = item.partition("=")
        overrides[key] = parse_value(value)
    plain = spaces.resolve(path, args.preset, overrides)
    steps = args.steps if args.steps is not None else (TINY["optim"]["max_steps"] if args.tiny else None)
    if steps is not None:
        warmup = int(plain.config.get("optim", {}).get("warmup_steps", 10))
        overrides.update({"optim.max_steps": steps, "optim.warmup_steps": min(warmup, steps)})
    sweep = spaces.resolve(path, args.preset, overrides)
    if sweep.ablation is not None:
        raise SystemExit(f"{args.sweep}: an ablation sweep (repeats of every level) has no one-trial form here")
    given = {k: parse_value(v) for k, _, v in (item.partition("=") for item in args.value)}
    sampled = {}
    for key, p in sweep.space.items():
        sampled[key] = given[key] if key in given else (p.values[0] if p.values else (int(p.low) if p.type == "int" else p.low))
    r = sweep.resources
    return {
        "sweep": sweep.name, "sweep_path": str(path), "preset": sweep.preset, "method": sweep.method,
        "sampled": sampled, "overrides": overrides, "config": sweep.trial_config(sampled),
        "baseline": bool(sweep.baseline and not args.no_baseline),
        "fresh_baseline": bool(args.fresh_baseline),
        "resources": {"num_workers": r.num_workers, "use_gpu": r.gpus_per_worker > 0, "cpus_per_worker": r.cpus_per_worker,
                      "gpus_per_worker": r.gpus_per_worker or 1.0},
    }


# --------------------------------------------------------------------------- (a) the bare loop, instrumented


class Marks:
    """Wall-clock timestamps (time.time(), comparable across processes on one machine) and summed durations."""

    def __init__(self) -> None:
        self.at: dict[str, float] = {}
        self.spans: dict[str, list[tuple[float, float]]] = {}

    def mark(self, name: str) -> None:
        self.at[name] = time.time()

    def wrap(self, module: Any, name: str, label: str | None = None) -> None:
        """Replace `module.name` (a function the method calls through its own namespace) by a timed call."""
        fn = getattr(module, name, None)
        if fn is None:
            return
        spans = self.spans.setdefault(label or name, [])

        def timed(*a: Any, **kw: Any) -> Any:
            t0 = time.time()
            try:
                return fn(*a, **kw)
            finally:
                spans.append((t0, time.time()))

        setattr(module, name, timed)

    def total(self, label: str, start: float = 0.0, end: float = float("inf")) -> float:
        return sum(b - a for a, b in self.spans.get(label, []) if a >= start and b <= end)


def child_bare(spec: dict[str, Any]) -> dict[str, Any]:
    """(a): setup -> train -> finish in this process, with the method's helpers wrapped for timestamps."""
    marks = Marks()
    marks.mark("imports_start")
    sys.path.insert(0, str(ROOT))
    import torch

    from trainables import load_method
    from trainables.blocks import evaluation, finish
    from trainables.blocks.training import Stepper

    module = load_method(spec["method"])
    marks.mark("imports_end")
    # The method's own namespace, and the shared blocks it calls: the final evaluation and the artifacts are
    # written by trainables.blocks.finish, the evaluations during training by blocks.evaluation's validator.
    for namespace in (module, finish, evaluation):
        for name, label in (("load_splits", "data"), ("load_base_model", "model_load"), ("evaluate", "evaluate"),
                            ("write_artifacts", "artifacts"), ("deployed_size_bytes", "size")):
            marks.wrap(namespace, name, label)
    steps_at: list[float] = []

    class TimedStepper(Stepper):
        def step(self, *a: Any, **kw: Any) -> dict[str, float]:
            out = super().step(*a, **kw)
            steps_at.append(time.time())
            return out

    if hasattr(module, "Stepper"):
        module.Stepper = TimedStepper
    cfg = module.parse_config(spec["config"])
    marks.mark("setup_start")
    s = module.setup(cfg)
    marks.mark("setup_end")
    features = getattr(getattr(s, "task", None), "features", None)
    if features is not None and hasattr(features, "one"):
        marks.wrap(features, "one", "features")
    history, stepper = module.train(s)
    marks.mark("train_end")
    metrics, out = module.finish(s, history, stepper)
    marks.mark("finish_end")
    if out is not None:
        shutil.rmtree(out, ignore_errors=True)
    a = marks.at
    evals = marks.spans.get("evaluate", [])
    return {
        "at": a, "steps_at": steps_at, "step_seconds": list(stepper.timer.seconds) if stepper else [],
        "data_s": marks.total("data"), "model_load_s": marks.total("model_load"),
        "features_train_s": marks.total("features", a["setup_end"], a["train_end"]),
        "features_eval_s": marks.total("features", a["train_end"], a["finish_end"]),
        "eval_during_train_s": marks.total("evaluate", a["setup_end"], a["train_end"]),
        "eval_final_s": sum(e - b for b, e in evals if b >= a["train_end"]),
        "size_s": marks.total("size"), "artifacts_s": marks.total("artifacts"),
        "metrics": {k: float(v) for k, v in metrics.items() if isinstance(v, int | float)},
        "threads": torch.get_num_threads(),
    }


# --------------------------------------------------------------------------- (b) one Ray Train run


def child_trainer(spec: dict[str, Any], storage: str) -> dict[str, Any]:
    """(b): a local Ray, one TorchTrainer with the preset's resources; the workers' progress posts are polled for
    the time of every step and of each decoding pass."""
    at = {"imports_start": time.time()}
    sys.path.insert(0, str(ROOT))
    import ray

    from trainables.blocks.launch import runtime_env, torch_trainer
    from trainables.blocks.progress import BOARD_NAME, ProgressBoard

    at["imports_end"] = time.time()
    # address="local": a private cluster, never one that another job on this machine started (and may tear down).
    ray.init(address="local", runtime_env=runtime_env(str(ROOT)), log_to_driver=False)
    board = ray.remote(ProgressBoard).options(name=BOARD_NAME, get_if_exists=True, num_cpus=0).remote()
    at["ray_ready"] = time.time()
    events: dict[str, Any] = {"steps": {}, "tasks": []}
    stop = threading.Event()

    def poll() -> None:
        task = None
        while not stop.wait(0.25):
            try:
                entries = ray.get(board.read.remote(), timeout=2.0)
            except Exception:  # noqa: BLE001 - a missed poll only blurs a timestamp
                continue
            for entry in entries.values():
                events.setdefault("first_post", entry.get("started"))
                if entry.get("step") is not None:
                    events["steps"].setdefault(int(entry["step"]), entry["updated"])
                if entry.get("task") != task:
                    if task is not None:
                        events["tasks"][-1]["end"] = entry["updated"]
                    task = entry.get("task")
                    if task is not None:
                        events["tasks"].append({"task": task, "start": entry["updated"]})

    thread = threading.Thread(target=poll, daemon=True)
    thread.start()
    trainer = torch_trainer(spec["method"], spec["config"], storage_path=storage, name="overhead", **spec["resources"])
    at["fit_start"] = time.time()
    try:
        result = trainer.fit()
    finally:
        at["fit_end"] = time.time()
        stop.set()  # before Ray goes away: a poll after it would start or join another cluster
        thread.join()
    if result.error is not None:
        raise RuntimeError(f"the Ray Train run failed: {result.error}")
    ray.shutdown()
    at["shutdown_end"] = time.time()
    metrics = {k: float(v) for k, v in result.metrics.items() if isinstance(v, int | float) and not isinstance(v, bool)}
    return {"at": at, "events": {**events, "steps": {str(k): v for k, v in events["steps"].items()}}, "metrics": metrics}


# --------------------------------------------------------------------------- running the three


def run_child(mode: str, spec_file: Path, work: Path) -> dict[str, Any]:
    """Run (a) or (b) in a fresh Python process; its wall time and what it measured."""
    env = {**os.environ, "RAY_ADDRESS": "local", "PYTHONPATH": str(ROOT), "TOKENIZERS_PARALLELISM": "false"}
    t0 = time.time()
    out = subprocess.run([sys.executable, __file__, "--child", mode, "--spec-file", str(spec_file),
                          "--child-storage", str(work / f"{mode}-results")], cwd=ROOT, env=env, capture_output=True,
                         text=True)
    t1 = time.time()
    line = next((x for x in reversed(out.stdout.splitlines()) if x.startswith(CHILD_PREFIX)), None)
    if out.returncode != 0 or line is None:
        raise SystemExit(f"({mode}) failed (exit {out.returncode}):\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    return {"t0": t0, "t1": t1, "wall_s": t1 - t0, **json.loads(line[len(CHILD_PREFIX):])}


STEP_RE = re.compile(r"\bstep (\d+)/(\d+)")
TASK_RE = re.compile(r"\((decoding [^()]*?) \d+/\S+\)")
ROW_RE = re.compile(r"^  \S.*?\s(RUNNING|FINISHED|ERROR|PENDING|PAUSED)\s")


def one_trial_file(spec: dict[str, Any], folder: Path) -> Path:
    """A copy of the sweep file with its space (and the preset's) cut to the one sampled value per key, one trial."""
    import yaml

    data = yaml.safe_load(Path(spec["sweep_path"]).read_text())
    one = {}
    for key, value in spec["sampled"].items():
        named = (data.get("space", {}).get(key) or {}).get("named")
        one[key] = {"type": "choice", "named": {value: named[value]}} if named else {"type": "choice", "values": [value]}
    data["space"] = one
    data["num_samples"] = 1
    data["max_concurrent_trials"] = 1
    data["baseline"] = spec["baseline"]
    for preset in (data.get("presets") or {}).values():
        preset.pop("space", None)
        preset["num_samples"] = 1
        preset["max_concurrent_trials"] = 1
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{spec['sweep']}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def sweep_command(spec: dict[str, Any], path: Path, work: Path, progress_s: float) -> tuple[list[str], dict[str, str], str]:
    """The command line, environment and tracking URI of `python -m platform.sweep` on the sweep file `path`, with
    `spec`'s preset and overrides, its own MLflow store and --storage in `work`, and a private Ray."""
    uri = f"sqlite:///{work / 'mlflow.db'}"
    cmd = [sys.executable, "-m", "platform.sweep", str(path), "--preset", spec["preset"], "--tracking-uri", uri,
           "--storage", str(work / "sweep-results"), "--no-register"]
    for key, value in spec["overrides"].items():
        cmd += ["--set", f"{key}={json.dumps(value) if not isinstance(value, str) else value}"]
    if spec.get("fresh_baseline"):
        cmd.append("--fresh-baseline")
    # RAY_ADDRESS=local: the sweep starts a private Ray, not joining a cluster another job on this machine runs.
    env = {**os.environ, "RAY_ADDRESS": "local", "SPEECH_SWEEPS_PROGRESS_S": str(progress_s), "PYTHONUNBUFFERED": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    return cmd, env, uri


def run_console(cmd: list[str], env: dict[str, str], stderr_path: Path, echo: Callable[[str], None] | None = None,
                ) -> tuple[list[tuple[float, str]], int, float, float]:
    """Run `cmd` from the repository root: its stdout lines, each with the time it arrived (and passed to `echo`
    as it comes); its exit status; the times it started and ended. Its stderr goes to `stderr_path`."""
    lines: list[tuple[float, str]] = []
    with open(stderr_path, "w") as stderr:
        t0 = time.time()
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=stderr, text=True, bufsize=1)
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append((time.time(), line.rstrip("\n")))
            if echo is not None:
                echo(lines[-1][1])
        rc = proc.wait()
        t1 = time.time()
    return lines, rc, t0, t1


def run_sweep(spec: dict[str, Any], work: Path, progress_s: float) -> dict[str, Any]:
    """(c): the one-trial sweep as a subprocess; its console lines timestamped as they arrive, then its MLflow runs."""
    path = one_trial_file(spec, work / "sweep")
    cmd, env, uri = sweep_command(spec, path, work, progress_s)
    lines, rc, t0, t1 = run_console(cmd, env, work / "sweep.stderr")
    if rc != 0:
        tail = "\n".join(x for _, x in lines[-40:])
        raise SystemExit(f"(c) the sweep failed (exit {rc}):\n{tail}\n{(work / 'sweep.stderr').read_text()[-3000:]}")

    def first(pred: Any) -> float | None:
        return next((t for t, x in lines if pred(x)), None)

    steps = {}
    tasks: list[dict[str, Any]] = []
    max_steps = int(spec["config"].get("optim", {}).get("max_steps", 0))
    current = None
    for t, x in lines:
        row = ROW_RE.match(x)
        if row is None:
            continue
        running = row.group(1) == "RUNNING"
        m = STEP_RE.search(x) if running else None
        if m:
            steps.setdefault(int(m.group(1)), t)
            max_steps = int(m.group(2))
        task = TASK_RE.search(x) if running else None
        name = task.group(1) if task else None
        if name != current:  # a decoding pass starts or ends (seen to within one console refresh)
            if current is not None:
                tasks[-1]["end"] = t
            if name is not None:
                tasks.append({"task": name, "start": t})
            current = name
    out = {"t0": t0, "t1": t1, "wall_s": t1 - t0, "lines": len(lines), "progress_s": progress_s,
           "first_line": first(lambda x: True), "baseline_line": first(lambda x: x.startswith("measuring the untuned")),
           "baseline_cached": first(lambda x: x.startswith("the untuned model (baseline): cached")) is not None,
           "steps": {str(k): v for k, v in steps.items()}, "max_steps": max_steps, "tasks": tasks}
    out.update(mlflow_times(uri, spec["sweep"]))
    out["console"] = [(round(t - t0, 2), x) for t, x in lines]
    return out


def mlflow_times(uri: str, experiment: str) -> dict[str, Any]:
    """Start, end and metric times (seconds since the epoch) of the sweep's parent and trial runs."""
    sys.path.insert(0, str(ROOT))
    from mlflow.tracking import MlflowClient

    c = MlflowClient(uri)
    exp = c.get_experiment_by_name(experiment)
    runs = c.search_runs([exp.experiment_id])
    parent = next(r for r in runs if "mlflow.parentRunId" not in r.data.tags)
    trial = next(r for r in runs if "mlflow.parentRunId" in r.data.tags)

    def metric_time(run: Any, name: str) -> float | None:
        hist = c.get_metric_history(run.info.run_id, name)
        return min(m.timestamp for m in hist) / 1000 if hist else None

    return {
        "parent_start": parent.info.start_time / 1000, "parent_end": (parent.info.end_time or 0) / 1000 or None,
        "baseline_logged": metric_time(parent, "baseline_wer"),
        "trial_start": trial.info.start_time / 1000, "trial_end": (trial.info.end_time or 0) / 1000 or None,
        "trial_result": metric_time(trial, "wer"), "trial_status": trial.info.status,
        "metrics": {k: float(v) for k, v in trial.data.metrics.items()},
    }


# --------------------------------------------------------------------------- the phases and the table


PHASES = [
    ("before", "before the trial starts (imports; Ray, Tune, MLflow parent run, baseline)"),
    ("to_first_step", "trial start -> first step done (worker start, data, model load + quantisation, step 1)"),
    ("steps", "steps 2..N (training)"),
    ("after_steps", "last step -> result on the driver (evaluation, size, artifacts, checkpoint)"),
    ("after_result", "result -> process exit (MLflow logging, report, shutdown)"),
]


def gap(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else b - a


def phases_bare(a: dict[str, Any]) -> dict[str, Any]:
    at, steps = a["at"], a["steps_at"]
    first_step = steps[0] if steps else at["train_end"]
    last_step = steps[-1] if steps else at["train_end"]
    return {
        "before": gap(a["t0"], at["setup_start"]),
        "to_first_step": gap(at["setup_start"], first_step),
        "steps": gap(first_step, last_step),
        "after_steps": gap(last_step, at["finish_end"]),
        "after_result": gap(at["finish_end"], a["t1"]),
        "detail": {
            "python start-up": gap(a["t0"], at["imports_start"]),
            "imports (torch, transformers, the method)": gap(at["imports_start"], at["imports_end"]),
            "data (load the splits)": a["data_s"],
            "model load + quantisation": a["model_load_s"],
            "rest of setup (processor, window, adapters)": gap(at["setup_start"], at["setup_end"]) - a["data_s"] - a["model_load_s"],
            "training steps (all N)": sum(a["step_seconds"]),
            "  of which log-mel features of training batches": a["features_train_s"],
            "evaluation during training": a["eval_during_train_s"],
            "final evaluation (val + test)": a["eval_final_s"],
            "  of which log-mel features of decoded utterances": a["features_eval_s"],
            "deployed size": a["size_s"],
            "artifacts (json, adapter)": gap(at["train_end"], at["finish_end"]) - a["eval_final_s"] - a["size_s"],
        },
    }


def phases_trainer(b: dict[str, Any]) -> dict[str, Any]:
    at, ev = b["at"], b["events"]
    steps = {int(k): v for k, v in ev["steps"].items()}
    first_step, last_step = (steps[min(steps)], steps[max(steps)]) if steps else (None, None)
    decoding = [t for t in ev["tasks"] if t["task"].startswith("decoding")]
    return {
        "before": gap(b["t0"], at["fit_start"]),
        "to_first_step": gap(at["fit_start"], first_step),
        "steps": gap(first_step, last_step),
        "after_steps": gap(last_step, at["fit_end"]),
        "after_result": gap(at["fit_end"], b["t1"]),
        "detail": {
            "python start-up + imports (ray, trainables)": gap(b["t0"], at["imports_end"]),
            "ray.init (local cluster) + progress board": gap(at["imports_end"], at["ray_ready"]),
            "TorchTrainer built": gap(at["ray_ready"], at["fit_start"]),
            "fit -> worker's first post (controller, worker start, setup, step 1)": gap(at["fit_start"], ev.get("first_post")),
            "decoding passes (from the workers' posts)": sum((t.get("end") or t["start"]) - t["start"] for t in decoding) or None,
            "last decoding -> fit returns (size, artifacts, checkpoint, worker exit)":
                gap(decoding[-1].get("end"), at["fit_end"]) if decoding else None,
            "ray.shutdown": gap(at["fit_end"], at["shutdown_end"]),
            "first step seen at step": min(steps) if steps else None,
        },
    }


def phases_sweep(c: dict[str, Any]) -> dict[str, Any]:
    steps = {int(k): v for k, v in c["steps"].items()}
    first_step, last_step = (steps[min(steps)], steps[max(steps)]) if steps else (None, None)
    if c["trial_result"] is not None and last_step is not None:  # a console line can trail the result it shows
        first_step, last_step = min(first_step, c["trial_result"]), min(last_step, c["trial_result"])
    base_end = c["baseline_logged"]
    decoding = [t for t in c["tasks"] if t["task"].startswith("decoding")]
    return {
        "before": gap(c["t0"], c["trial_start"]),
        "to_first_step": gap(c["trial_start"], first_step),
        "steps": gap(first_step, last_step),
        "after_steps": gap(last_step, c["trial_result"]),
        "after_result": gap(c["trial_result"], c["t1"]),
        "detail": {
            "python start-up, imports, sweep file checked (first console line)": gap(c["t0"], c["first_line"]),
            "-> MLflow parent run created": gap(c["first_line"], c["parent_start"]),
            "-> assets checked, Ray started (baseline begins)": gap(c["parent_start"], c["baseline_line"]),
            "baseline: the untuned model measured (its own Ray Train run)": gap(c["baseline_line"], base_end),
            "-> Tune started, trial's MLflow run created (Ray's start too, without a baseline)":
                gap(base_end or c["parent_start"], c["trial_start"]),
            "decoding passes (seen in the console)": sum((t.get("end") or t["start"]) - t["start"] for t in decoding) or None,
            "result -> trial's MLflow run ended (history, artifacts logged)": gap(c["trial_result"], c["trial_end"]),
            "trial end -> parent run ended (report: table, plot)": gap(c["trial_end"], c["parent_end"]),
            "parent end -> process exit": gap(c["parent_end"], c["t1"]),
            "first step seen at step": min(steps) if steps else None,
        },
    }


def fmt(x: float | None, spec: str = "7.1f") -> str:
    return " " * (int(spec.split(".")[0]) - 1) + "-" if x is None else format(x, spec)


def baseline_use(spec: dict[str, Any], c: dict[str, Any] | None) -> str:
    """Whether (c) measured the untuned-model baseline, read it from the machine's cache, or left it out."""
    if not spec["baseline"]:
        return "no"
    if c is None:
        return "yes"
    return "read from the baseline cache (measured by an earlier run)" if c.get("baseline_cached") else "measured"


def report(spec: dict[str, Any], results: dict[str, dict[str, Any]], phases: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Print the walls, ratios, phase table and details; return the RESULT object."""
    a = results["a"]["wall_s"]
    print(f"\ntrial: sweep {spec['sweep']}, preset {spec['preset']}, method {spec['method']}, "
          f"{json.dumps(spec['sampled'])}, {spec['config'].get('optim', {}).get('max_steps')} steps; "
          f"baseline in (c): {baseline_use(spec, results.get('c'))}")
    names = {"a": "(a) bare loop", "b": "(b) Ray Train TorchTrainer", "c": "(c) one-trial sweep"}
    ratios = {}
    for key, label in names.items():
        if key in results:
            wall = results[key]["wall_s"]
            sps = results[key]["metrics"].get("train_samples_per_s")
            print(f"{label} wall_s: {wall:.1f}  (wer {results[key]['metrics'].get('wer', float('nan')):.4f}, "
                  f"train_samples_per_s {sps if sps is not None else float('nan'):.3f})")
    for key in ("b", "c"):
        if key in results:
            ratios[key] = results[key]["wall_s"] / a
            print(f"ratio ({key})/(a): {ratios[key]:.2f}")
    print("\nwhere the time goes (s; diff = this run minus (a)):")
    cols = [k for k in ("a", "b", "c") if k in results]
    head = f"  {'phase':<86}" + "".join(f"{'(' + k + ')':>8}" for k in cols) + "".join(f"{'diff ' + k:>8}" for k in cols[1:])
    print(head)
    for key, label in PHASES:
        row = f"  {label:<86}" + "".join(f" {fmt(phases[k][key])}" for k in cols)
        row += "".join(f" {fmt(gap(phases['a'][key], phases[k][key]))}" for k in cols[1:])
        print(row)
    print(f"  {'total (wall)':<86}" + "".join(f" {fmt(results[k]['wall_s'])}" for k in cols)
          + "".join(f" {fmt(results[k]['wall_s'] - a)}" for k in cols[1:]))
    for k in cols:
        print(f"\n{names[k]}, in detail:")
        for label, value in phases[k]["detail"].items():
            print(f"  {label:<86} {fmt(value) if not isinstance(value, int) else value:>8}")
    return {"spec": {k: spec[k] for k in ("sweep", "preset", "method", "sampled", "overrides", "baseline")},
            "wall_s": {k: results[k]["wall_s"] for k in cols}, "ratio": ratios,
            "phases": {k: phases[k] for k in cols},
            "train_samples_per_s": {k: results[k]["metrics"].get("train_samples_per_s") for k in cols},
            "wer": {k: results[k]["metrics"].get("wer") for k in cols}}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sweep", default="qlora_rank", help="sweep name or YAML path (default qlora_rank)")
    p.add_argument("--preset", default="local", choices=["local", "gpu"])
    p.add_argument("--value", action="append", default=[], metavar="KEY=VALUE",
                   help="the trial's value of a searched key (default: its first value)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a fixed config value")
    p.add_argument("--steps", type=int, help="optim.max_steps (default: the preset's; 3 with --tiny)")
    p.add_argument("--model", help="model asset or folder (with --tiny: instead of a freshly built random one)")
    p.add_argument("--tiny", action="store_true", help="a random 2+2-layer Whisper, espeak-smoke, 3 steps of 2")
    p.add_argument("--no-baseline", action="store_true", help="(c) without the untuned-model baseline")
    p.add_argument("--fresh-baseline", action="store_true",
                   help="(c) measures the baseline even when the machine's baseline cache has it")
    p.add_argument("--skip-trainer", action="store_true", help="do not run (b)")
    p.add_argument("--skip-sweep", action="store_true", help="do not run (c)")
    p.add_argument("--progress-s", type=float, default=1.0, help="(c)'s console refresh, i.e. its step-time resolution")
    p.add_argument("--json", type=Path, help="also write the RESULT object here")
    p.add_argument("--child", choices=["bare", "trainer"], help=argparse.SUPPRESS)
    p.add_argument("--spec-file", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--child-storage", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        spec = json.loads(args.spec_file.read_text())
        out = child_bare(spec) if args.child == "bare" else child_trainer(spec, args.child_storage)
        print(CHILD_PREFIX + json.dumps(out), flush=True)
        return 0
    work = Path(tempfile.mkdtemp(prefix="overhead-"))
    try:
        spec = trial_spec(args, work)
        spec_file = work / "spec.json"
        spec_file.write_text(json.dumps(spec))
        print(f"[{time.strftime('%H:%M:%S')}] trial config ready; running (a) the bare loop ...", flush=True)
        results = {"a": run_child("bare", spec_file, work)}
        if not args.skip_trainer:
            print(f"[{time.strftime('%H:%M:%S')}] (a) {results['a']['wall_s']:.1f} s; running (b) one TorchTrainer ...", flush=True)
            results["b"] = run_child("trainer", spec_file, work)
        if not args.skip_sweep:
            print(f"[{time.strftime('%H:%M:%S')}] running (c) the one-trial sweep ...", flush=True)
            results["c"] = run_sweep(spec, work, args.progress_s)
        phases = {"a": phases_bare(results["a"])}
        if "b" in results:
            phases["b"] = phases_trainer(results["b"])
        if "c" in results:
            phases["c"] = phases_sweep(results["c"])
        out = report(spec, results, phases)
        if args.json:
            args.json.write_text(json.dumps(out, indent=2))
            if "c" in results:  # the sweep's console, each line with its arrival time (s after its start)
                args.json.with_suffix(".console.txt").write_text(
                    "".join(f"{t:8.2f}  {x}\n" for t, x in results["c"]["console"]))
        print(RESULT_PREFIX + json.dumps(out), flush=True)
        return 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
