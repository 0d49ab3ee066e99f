"""The overhead, Seq2SeqTrainer, sweep-cost and time-to-quality benchmarks run end to end on a tiny configuration
and print well-formed fields. Speed itself is the benchmarks' business, not the tests': no number is compared with a bound here."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT
from tests.postgres import postgres_server  # noqa: F401 - the fixture

NUMBER = r"([-+]?\d+(?:\.\d+)?|nan)"


def run_benchmark(script: str, *args: str, timeout: int = 600) -> tuple[str, dict]:
    """Run benchmarks/`script`, assert it exits 0, and return its stdout and its RESULT object."""
    env = {**os.environ, "RAY_ADDRESS": ""}
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), *args], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    lines = [x for x in out.stdout.splitlines() if x.startswith("RESULT ")]
    assert len(lines) == 1, out.stdout[-3000:]
    return out.stdout, json.loads(lines[0].removeprefix("RESULT "))


def printed(stdout: str, label: str) -> float:
    """The number printed after `label:` (a line's field), which must be there."""
    m = re.search(re.escape(label) + r":\s+" + NUMBER, stdout)
    assert m, f"{label!r} not printed:\n{stdout[-2000:]}"
    return float(m.group(1))


def finite_positive(x: float | None) -> bool:
    return x is not None and math.isfinite(x) and x > 0


@pytest.mark.integration  # starts Ray twice: one TorchTrainer, one sweep
def test_overhead_prints_walls_ratios_and_phases(tiny_whisper_dir: Path) -> None:
    stdout, result = run_benchmark("overhead.py", "--tiny", "--model", str(tiny_whisper_dir), "--no-baseline")
    for label in ("(a) bare loop wall_s", "(b) Ray Train TorchTrainer wall_s", "(c) one-trial sweep wall_s",
                  "ratio (b)/(a)", "ratio (c)/(a)"):
        assert finite_positive(printed(stdout, label)), label
    assert "where the time goes" in stdout and "total (wall)" in stdout
    assert set(result["wall_s"]) == {"a", "b", "c"} and set(result["ratio"]) == {"b", "c"}
    assert result["ratio"]["c"] == pytest.approx(result["wall_s"]["c"] / result["wall_s"]["a"])
    assert result["spec"]["sampled"] == {"lora.r": 1} and result["spec"]["baseline"] is False
    for run in ("a", "b", "c"):
        phases = result["phases"][run]
        for key in ("before", "to_first_step", "after_steps", "after_result"):
            assert phases[key] is not None and phases[key] >= 0, (run, key, phases[key])
        assert phases["detail"], run
        assert 0 <= result["wer"][run] <= 1.5, (run, result["wer"][run])
    detail = result["phases"]["a"]["detail"]
    assert detail["model load + quantisation"] > 0 and detail["training steps (all N)"] > 0
    # The final evaluation runs in the shared finish block, not the method's module: it is timed there too.
    assert detail["final evaluation (val + test)"] > 0 and detail["evaluation during training"] >= 0
    assert result["phases"]["c"]["detail"]["result -> trial's MLflow run ended (history, artifacts logged)"] >= 0
    assert result["phases"]["c"]["detail"]["baseline: the untuned model measured (its own Ray Train run)"] is None


@pytest.mark.slow  # trains a tiny model twice (no Ray)
def test_vs_hf_trainer_prints_both_throughputs_ratio_and_wers(tiny_whisper_dir: Path) -> None:
    stdout, result = run_benchmark("vs_hf_trainer.py", "--tiny", "--model", str(tiny_whisper_dir))
    for label in ("project loop", "Seq2SeqTrainer + peft"):
        line = next(x for x in stdout.splitlines() if x.startswith(label))
        assert finite_positive(printed(line, "train_samples_per_s")), line
        assert 0 <= printed(line, "wer") <= 1.5, line
    assert finite_positive(printed(stdout, "ratio project/hf train_samples_per_s"))
    printed(stdout, "wer project - hf")
    for side in ("project", "hf"):
        assert result[side]["steps"] == 4, side
    # Same adapters on both sides: the same number of trainable parameters.
    assert result["project"]["trainable_params"] == result["hf"]["trainable_params"]
    assert result["ratio_samples_per_s"] == pytest.approx(result["project"]["samples_per_s"] / result["hf"]["samples_per_s"])


@pytest.mark.integration  # starts Ray twice: a one-trial and a two-trial sweep
def test_sweep_cost_prints_table_fit_and_writes_plot(tiny_whisper_dir: Path, tmp_path: Path) -> None:
    plot = tmp_path / "cost.png"
    stdout, result = run_benchmark("sweep_cost.py", "--trials", "1,2", "--concurrency", "1", "--steps", "2",
                                   "--model", str(tiny_whisper_dir), "--plot", str(plot), "--progress-s", "1")
    assert re.search(r"^\s+N\s+C\s+wall s\s+s/trial\s+trial_wall_s\s+first step s\s+exit\s+speedup$", stdout, re.M)
    for n in (1, 2):
        row = re.search(rf"^\s+{n}\s+1\s+{NUMBER}\s+{NUMBER}\s+{NUMBER}\s+(\S+)\s+0\s+-$", stdout, re.M)
        assert row, f"no row for N={n}:\n{stdout[-2000:]}"
        assert finite_positive(float(row.group(1))) and float(row.group(2)) == pytest.approx(float(row.group(1)) / n, abs=0.11)
    assert "fit C=1: wall = fixed + N x per_trial over 2 runs" in stdout
    printed(stdout, "fixed_s")  # may be negative on busy cores: the fit's intercept, not a measured time
    assert finite_positive(printed(stdout, "per_trial_s"))
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and f"plot: {plot}" in stdout
    runs = result["runs"]
    assert [(r["n"], r["c"], r["rc"]) for r in runs] == [(1, 1, 0), (2, 1, 0)]
    for r in runs:
        assert r["trials_finished"] == r["n"] and len(r["trial_wall_s"]) == r["n"], r
        assert all(finite_positive(w) and w < r["wall_s"] for w in r["trial_wall_s"]), r
        assert 0 < r["first_trial_start_s"] < r["wall_s"], r
        # The console shows a trained step only if a refresh (every 1 s) falls between step 1 and the result.
        assert r["first_step_s"] is None or r["first_trial_start_s"] < r["first_step_s"] < r["wall_s"], r
    fit = result["fits"]["1"]
    assert fit["points"] == 2
    # Two points: the line goes through both.
    assert fit["fixed_s"] + fit["per_trial_s"] == pytest.approx(runs[0]["wall_s"])
    assert fit["fixed_s"] + 2 * fit["per_trial_s"] == pytest.approx(runs[1]["wall_s"])
    assert result["spec"]["baseline"] is False and result["steps"] == 2 and result["speedups"] == []


def load_benchmark(script: str) -> Any:
    """benchmarks/`script` imported as a module (the folder is not a package)."""
    spec = importlib.util.spec_from_file_location(Path(script).stem, ROOT / "benchmarks" / script)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_time_to_quality_takes_evaluation_out_of_training_time() -> None:
    ttq = load_benchmark("time_to_quality.py")
    # Training starts at 10 s; steps end at 12, 14 (a 5 s pass after it, 14-19), 21, 23 (a 3 s pass, 23-26).
    evals = [{"start": 14.0, "end": 19.0, "wer": 0.30}, {"start": 23.0, "end": 26.0, "wer": 0.20}]
    curve = ttq.timeline(10.0, [12.0, 14.0, 21.0, 23.0], evals)
    assert curve == [{"step": 2, "val_wer": 0.30, "train_s": 4.0, "wall_s": 19.0},
                     {"step": 4, "val_wer": 0.20, "train_s": 8.0, "wall_s": 26.0}]
    assert ttq.to_target(curve, 0.25) == {"step": 4, "train_s": 8.0, "wall_s": 26.0}
    assert ttq.to_target(curve, 0.30) == {"step": 2, "train_s": 4.0, "wall_s": 19.0}
    assert ttq.to_target(curve, 0.10) is None
    assert ttq.ratio(8.0, 2.0) == 4.0 and ttq.ratio(8.0, None) is None


@pytest.mark.slow  # trains a tiny model twice (no Ray)
def test_time_to_quality_prints_table_times_to_target_and_ratio(tiny_whisper_dir: Path, tmp_path: Path) -> None:
    # A target every pass reaches: both sides hit it at their first validation pass (step 2 of 4).
    first = tmp_path / "first.json"
    stdout, result = run_benchmark("time_to_quality.py", "--tiny", "--model", str(tiny_whisper_dir), "--target", "100",
                                   "--json", str(first))
    assert re.search(r"^side\s+window_s\s+base\s+steps\s+best_val_wer\s+steps_to_target\s+train_s_to_target\s+"
                     r"wall_s_to_target\s+train_s\s+val_eval_s\s+setup_s\s+wall_s\s+test_wer\s+natural_wer$", stdout, re.M)
    for side, base in (("standard", "fp32"), ("platform", "nf4\\+dq")):
        row = re.search(rf"^{side}\s+{NUMBER}\s+{base}\s+4\s+{NUMBER}\s+2" + rf"\s+{NUMBER}" * 7 + r"\s+(\S+)$", stdout, re.M)
        assert row, f"no row for {side}:\n{stdout[-3000:]}"
        assert row.group(10) == "n/a" or 0 <= float(row.group(10)) <= 1.5, row.group(0)
    assert "training wall time with evaluation time taken out (both sides)" in stdout
    for side in ("standard", "platform"):  # each validation pass shows while the side trains
        assert re.search(rf"^\[\d\d:\d\d:\d\d\]   {side}: step 2/4, val WER {NUMBER} \(\d+ s\)$", stdout, re.M), side
    assert printed(stdout, "target val WER") == 100
    for key in ("train_s_to_target", "wall_s_to_target", "wall_s"):
        assert finite_positive(printed(stdout, f"ratio standard/platform {key}")), key

    assert result["target_wer"] == 100 and result["target_from"] == "--target"
    assert result["steps"] == 4 and result["every"] == 2 and isinstance(result["timing"], str)
    std, plat = result["standard"], result["platform"]
    assert std["window_s"] == 30.0 and 0 < plat["window_s"] < 30.0
    assert (std["base"], plat["base"]) == ("fp32", "nf4+dq")
    assert std["trainable_params"] == plat["trainable_params"]  # same placement and rank
    for side in (std, plat):
        assert side["steps"] == 4 and [c["step"] for c in side["curve"]] == [2, 4]
        for c in side["curve"]:
            assert 0 <= c["val_wer"] <= 1.5 and 0 < c["train_s"] < c["wall_s"] <= side["wall_s"], c
        assert side["to_target"] == {k: side["curve"][0][k] for k in ("step", "train_s", "wall_s")}
        for key in ("train_s", "val_eval_s", "setup_s", "wall_s", "process_wall_s"):
            assert finite_positive(side[key]), key
        assert side["train_s"] + side["setup_s"] <= side["wall_s"]
        assert 0 <= side["test_wer"] <= 1.5
        assert side["natural_wer"] is None or 0 <= side["natural_wer"] <= 1.5
    assert 0 <= std["val_wer_check"] <= 1.5
    assert result["ratio"]["train_s_to_target"] == pytest.approx(std["to_target"]["train_s"] / plat["to_target"]["train_s"])
    assert result["ratio"]["steps_to_target"] == 1.0
    assert json.loads(first.read_text()) == result

    # The platform side again with a budget of its own; the standard side read back from the first run.
    stdout, again = run_benchmark("time_to_quality.py", "--tiny", "--model", str(tiny_whisper_dir), "--target", "100",
                                  "--standard-from", str(first), "--platform-steps", "6")
    assert "standard side read from" in stdout and "training with standard" not in stdout
    assert again["standard"] == result["standard"] and again["standard_from"] == str(first)
    assert again["platform_steps"] == 6 and again["platform"]["steps"] == 6
    assert [c["step"] for c in again["platform"]["curve"]] == [2, 4, 6]

    # Read back only for the same trial: a different step budget is refused in one line, before any training.
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "time_to_quality.py"), "--tiny", "--model",
                          str(tiny_whisper_dir), "--steps", "2", "--standard-from", str(first)],
                         cwd=ROOT, env={**os.environ, "RAY_ADDRESS": ""}, capture_output=True, text=True, timeout=300)
    assert out.returncode != 0 and "training with" not in out.stdout
    assert out.stderr.strip().splitlines()[-1] == f"--standard-from {first}: its steps is 4, this run's is 2"


def test_tracking_load_finds_where_latency_errors_or_throughput_climb() -> None:
    climb = load_benchmark("tracking_load.py").climb

    def level(n: int, per_s: float, p95: float, errors: int = 0) -> dict:
        return {"n": n, "metrics_per_s": per_s, "p95_ms": p95, "errors": errors, "first_error": "boom"}

    assert climb([level(1, 100, 10), level(2, 190, 12), level(4, 350, 15)]) == (4, None, "no climb up to N=4")
    holds, at, why = climb([level(1, 100, 10), level(2, 190, 12), level(4, 360, 25)])
    assert (holds, at) == (2, 4) and "p95 25 ms, 2.5x N=1's" in why
    holds, at, why = climb([level(1, 100, 10), level(2, 105, 11)])
    assert (holds, at) == (1, 2) and "saturated" in why
    holds, at, why = climb([level(1, 100, 10), level(2, 190, 11, errors=3)])
    assert (holds, at) == (1, 2) and "3 failed requests (boom)" in why
    assert climb([level(1, 0, 10, errors=1)])[:2] == (0, 1)


@pytest.mark.integration  # starts PostgreSQL (or uses CI's) and an mlflow server, no Ray
def test_tracking_load_prints_rates_latencies_and_where_it_climbs(postgres_server: str) -> None:  # noqa: F811
    stdout, result = run_benchmark("tracking_load.py", "--levels", "1,2", "--seconds", "5", "--steps", "2",
                                   "--workers", "1", "--postgres", postgres_server)
    for n in (1, 2):
        line = next(x for x in stdout.splitlines() if x.startswith(f"N={n} "))
        for label in ("trials/s", "metrics/s", "requests/s", "p50_ms", "p95_ms", "errors", "pool_timeouts",
                      "db_connections"):
            value = printed(line, label)
            assert value >= 0 and math.isfinite(value), (label, line)
        assert printed(line, "metrics/s") > 0 and printed(line, "db_connections") >= 1, line
    assert re.search(r"^holds: \d+ concurrent fake trials", stdout, re.M) and re.search(r"^climbs at: ", stdout, re.M)
    assert "postgresql://sweeps:***@" in stdout and "View run" not in stdout
    levels = result["levels"]
    assert [lv["n"] for lv in levels] == [1, 2] and result["holds"] in (0, 1, 2)
    for lv in levels:
        assert lv["errors"] == 0, lv["first_error"]  # two writers are far from what one server holds
        assert lv["p50_ms"] <= lv["p95_ms"] and lv["requests_per_s"] >= lv["metrics_per_s"] / 9
        assert lv["trials_per_s"] > 0  # 2-step fake trials finish within a level


def test_gpu_benchmark_runs_every_method_step_on_tiny_models() -> None:
    """`gpu.py --tiny`: the same path as on a GPU (models from configs, the project's loaders and Stepper), on the CPU."""
    stdout, result = run_benchmark("gpu.py", "--tiny", timeout=300)
    rows = {r["case"]: r for r in result["rows"]}
    assert set(rows) == {"qlora_nf4", "qlora_bf16", "qlora_nf4_paged8", "qlora_nf4_fp16", "dqlora_nf4",
                         "dq_whisper_fq4", "llm_adaptor_nf4", "llm_adaptor_bf16", "whistle_nf4"}
    for name, row in rows.items():
        assert row["error"] == "", (name, row["error"])
        assert finite_positive(row["samples_per_s"]) and finite_positive(row["trainable_m"]), row
        assert math.isfinite(row["loss_first"]) and math.isfinite(row["loss_last"]), row
        assert f"| {name} |" in stdout
    # On the CPU the paged optimiser and fp16 autocast are replaced (they need CUDA), and memory is not read.
    assert rows["qlora_nf4_paged8"]["optimizer"] == "adamw" and rows["qlora_nf4_fp16"]["autocast"] == "off"
    assert rows["qlora_nf4"]["peak_vram_mb"] is None
    # The 4-bit and bf16 bases hold the same adapters; the fake-quantised student trains every weight.
    assert rows["qlora_nf4"]["trainable_m"] == rows["qlora_bf16"]["trainable_m"]
    assert rows["dq_whisper_fq4"]["trainable_m"] > 5 * rows["qlora_nf4"]["trainable_m"]
    assert finite_positive(result["ratios"]["qlora_speed_nf4_over_bf16"])
    assert printed(stdout, "qlora_speed_nf4_over_bf16") == pytest.approx(result["ratios"]["qlora_speed_nf4_over_bf16"],
                                                                         abs=0.006)


def test_gpu_benchmark_refuses_without_cuda_and_unknown_cases_in_one_line() -> None:
    import torch

    script = str(ROOT / "benchmarks" / "gpu.py")
    bad = subprocess.run([sys.executable, script, "--tiny", "--cases", "qlora_nf4,nope"], cwd=ROOT, capture_output=True,
                         text=True, timeout=120)
    assert bad.returncode == 2 and bad.stdout == ""
    assert bad.stderr.strip().splitlines() == ["gpu.py: --cases: unknown nope (known: " + ", ".join(
        ["qlora_nf4", "qlora_bf16", "qlora_nf4_paged8", "qlora_nf4_fp16", "dqlora_nf4", "dq_whisper_fq4",
         "llm_adaptor_nf4", "llm_adaptor_bf16", "whistle_nf4"]) + ")"]
    if torch.cuda.is_available():
        return
    out = subprocess.run([sys.executable, script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and out.stdout == ""
    assert len(out.stderr.strip().splitlines()) == 1 and "no CUDA device" in out.stderr


def test_rehearse_all_refuses_an_unknown_sweep_in_one_line() -> None:
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "rehearse_all.py"), "--only", "qlora_rank,no_such"],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr.strip().startswith("error: no sweep named no_such; there are: ")
    assert len(out.stderr.strip().splitlines()) == 1


def test_trial_timeline_splits_each_trial_from_rays_task_events() -> None:
    split_trials = load_benchmark("trial_timeline.py").split_trials

    def task(name: str, **states: float) -> dict:
        return {"name": name, "events": [{"state": s, "created_ms": t * 1000} for s, t in states.items()]}

    tasks = [  # trial 1 on a new function actor, trial 2 on the same actor (Tune reused it)
        task("ImplicitFunc.__init__", PENDING_ARGS_AVAIL=1.0, RUNNING=1.5, FINISHED=2.0),
        task("trial.train", RUNNING=2.0, FINISHED=12.0),
        task("TrainController.__init__", PENDING_ARGS_AVAIL=4.0, RUNNING=4.5, FINISHED=6.0),
        task("TrainController.run", PENDING_ARGS_AVAIL=4.0, RUNNING=6.0, FINISHED=11.5),
        task("RayTrainWorker.run_train_fn", RUNNING=8.0, FINISHED=9.0),
        task("trial.train", RUNNING=12.1, FINISHED=13.0),
        task("trial.train", RUNNING=13.1, FINISHED=18.0),
        task("TrainController.__init__", PENDING_ARGS_AVAIL=13.5, RUNNING=14.0, FINISHED=15.0),
        task("TrainController.run", PENDING_ARGS_AVAIL=13.5, RUNNING=15.0, FINISHED=19.0),
        task("RayTrainWorker.run_train_fn", RUNNING=16.5, FINISHED=17.0),
        task("trial.train", RUNNING=18.1, FINISHED=19.5),
    ]
    first, second = split_trials(tasks)
    assert first == pytest.approx({"actor": 1.0, "trial fn": 2.0, "controller": 2.0, "workers": 2.0,
                                   "train loop": 3.5, "finish": 0.5})
    assert second == pytest.approx({"actor": 0.0, "trial fn": 0.4, "controller": 1.5, "workers": 1.5,
                                    "train loop": 2.5, "finish": 0.5})


def test_cpu_by_process_reads_proc_and_counts_what_each_process_used(tmp_path: Path) -> None:
    cpu = load_benchmark("cpu_by_process.py")
    tick = os.sysconf("SC_CLK_TCK")

    def proc(pid: int, name: str, utime: int, stime: int, cmd: bytes) -> None:
        d = tmp_path / str(pid)
        d.mkdir(exist_ok=True)
        # /proc/PID/stat: "pid (comm) state" then fields; utime and stime are the 14th and 15th in all
        rest = ["S"] + ["0"] * 10 + [str(utime), str(stime)] + ["0"] * 5
        (d / "stat").write_text(f"{pid} ({name}) " + " ".join(rest) + "\n")
        (d / "cmdline").write_bytes(cmd)

    proc(10, "python", 100, 50, b"python\0train.py\0")
    proc(11, "ray worker (x)", 5, 5, b"")
    (tmp_path / "self").mkdir()
    before = cpu.snapshot(tmp_path)
    assert before == {10: (150 / tick, "python train.py"), 11: (10 / tick, "ray worker (x)")}
    proc(10, "python", 300, 60, b"python\0train.py\0")
    proc(12, "raylet", 3, 1, b"raylet\0")  # started in between
    rows = cpu.used(before, cpu.snapshot(tmp_path))
    assert rows == [(pytest.approx(210 / tick), 10, "python train.py"), (pytest.approx(4 / tick), 12, "raylet")]


def test_encoder_window_natural_prints_wer_and_repeats_per_window(tiny_whisper_dir: Path) -> None:
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "encoder_window.py"), "--natural", "espeak-smoke",
                          "--windows", "2,3.5", "--eval-items", "2", "--model", str(tiny_whisper_dir)],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    rows = re.findall(r"window\s+([\d.]+) s: WER " + NUMBER + r", (\d+) of (\d+) hypotheses repeat", out.stdout)
    assert [float(w) for w, *_ in rows] == [2.0, 3.5], out.stdout
    assert all(float(wer) >= 0 and 0 <= int(rep) <= int(n) == 2 for _, wer, rep, n in rows)
    bad = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "encoder_window.py"), "--natural", "espeak-smoke",
                          "--windows", "40"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert bad.returncode != 0 and bad.stderr.strip().splitlines() == ["--windows: each must be in (0, 30] seconds, got '40'"]


def test_natural_seeds_prints_each_seeds_wer_and_their_spread(tiny_whisper_dir: Path) -> None:
    pytest.importorskip("piper", reason="the natural voice needs piper-tts (setup.sh installs it)")
    stdout, result = run_benchmark("natural_seeds.py", "--set", "natural-smoke", "--seeds", "0,1", "--items", "2",
                                   "--model", str(tiny_whisper_dir), "--window", "30", timeout=300)
    assert result["seeds"] == [0, 1] and len(result["wer"]) == 2 and all(w >= 0 for w in result["wer"])
    assert result["window_s"] == 30 and "at a 30 s window" in stdout
    assert result["range"] == pytest.approx(max(result["wer"]) - min(result["wer"]))
    assert f"seed 0: WER {result['wer'][0]:.4f} over " in stdout and f"seed 1: WER {result['wer'][1]:.4f} over " in stdout
    bad = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "natural_seeds.py"), "--seeds", "0,x"], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode != 0 and bad.stderr.strip().splitlines()[-1].endswith("--seeds: comma-separated integers, got '0,x'")
    wide = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "natural_seeds.py"), "--window", "40"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert wide.returncode != 0 and wide.stderr.strip().splitlines()[-1].endswith("--window: seconds in (0, 30], got 40")

