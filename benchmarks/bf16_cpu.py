"""bf16 autocast against fp32 on this machine's CPU, per method: training step time and WER after a short run.

    .venv/bin/python benchmarks/bf16_cpu.py [--methods qlora,dqlora,dq_whisper,whistle] [--steps N]
    .venv/bin/python benchmarks/bf16_cpu.py --interleaved [--methods ...] [--rounds 3] [--steps 5]

Each method runs one trial of its local preset (the sweep and level below) in-process, once with
`optim.autocast=off` and once with `optim.autocast=bf16`, each in its own Python process, with the same seed and
steps. Evaluation is fp32 in both (autocast covers the training step only). Prints one JSON line per run and a
table: seconds per training step (steady state, from `train_samples_per_s`), the bf16/fp32 speed ratio, the WER of
each and its difference. `optim.autocast: auto` uses bf16 on CPU only for methods where this measured faster
with WER unchanged (see docs/benchmarks.md, bf16 on the CPU).

`--interleaved` measures step time only, robustly on a shared machine: one process per method sets the trial
up once, then alternates short training runs (`--steps` each, the first two steps of each left out as warm-up)
between fp32 and bf16 for `--rounds` rounds, so load from other processes falls on both alike; it prints the
median seconds per step of each and their ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# method -> (sweep, sampled level, default steps for a short run)
CASES: dict[str, tuple[str, dict, int]] = {
    "qlora": ("qlora_rank", {"lora.r": 16}, 40),
    "dqlora": ("dqlora_lambda", {"kd.lambda_": 0.3, "noise.snr_db": 10.0}, 60),
    "dq_whisper": ("dq_whisper_alpha", {"alpha": "a050", "seed": 0}, 32),
    "whistle": ("whistle_adaptation", {"mode": "tle", "seed": 0}, 50),
}


def one(method: str, autocast: str, steps: int) -> dict:
    """Run one trial in this process and return what the table needs."""
    sys.path.insert(0, str(ROOT))
    from platform import spaces
    from trainables import load_method

    sweep_name, sampled, _ = CASES[method]
    module = load_method(method)
    preset = spaces.resolve(spaces.find(sweep_name), "local")
    warmup = module.parse_config(preset.trial_config(sampled)).optim.warmup_steps
    overrides = {"optim.autocast": autocast, "optim.max_steps": steps, "optim.warmup_steps": min(warmup, steps)}
    config = spaces.resolve(spaces.find(sweep_name), "local", overrides).trial_config(sampled)
    t0 = time.perf_counter()
    metrics = module.run(module.parse_config(config))
    batch = int(module.parse_config(config).optim.batch_size)
    rate = float(metrics["train_samples_per_s"])
    return {"method": method, "autocast": autocast, "steps": steps, "batch_size": batch,
            "s_per_step": batch / rate if rate > 0 else float("nan"), "wer": float(metrics["wer"]),
            "loss": float(metrics.get("loss", float("nan"))), "wall_s": time.perf_counter() - t0}


def interleaved(method: str, rounds: int, steps: int) -> dict:
    """Median seconds per training step under fp32 and bf16, alternating on one set-up model."""
    import statistics

    sys.path.insert(0, str(ROOT))
    from platform import spaces
    from trainables import load_method

    sweep_name, sampled, _ = CASES[method]
    module = load_method(method)
    overrides = {"optim.max_steps": steps, "optim.warmup_steps": 0}
    cfg = module.parse_config(spaces.resolve(spaces.find(sweep_name), "local", overrides).trial_config(sampled))
    s = module.setup(cfg)
    times: dict[str, list[float]] = {"off": [], "bf16": []}
    for _ in range(rounds):
        for mode in ("off", "bf16"):
            cfg.optim.autocast = mode
            _, stepper = module.train(s)
            times[mode] += stepper.timer.seconds[2:]
    off, bf16 = statistics.median(times["off"]), statistics.median(times["bf16"])
    return {"method": method, "rounds": rounds, "steps_each": steps, "measured_steps": len(times["off"]),
            "fp32_s_per_step": off, "bf16_s_per_step": bf16, "speedup": off / bf16}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--methods", default=",".join(CASES))
    p.add_argument("--steps", type=int, help="training steps per run (default: per method, see CASES)")
    p.add_argument("--interleaved", action="store_true", help="step time only, fp32 and bf16 alternating in one process")
    p.add_argument("--rounds", type=int, default=3, help="--interleaved: fp32/bf16 rounds")
    p.add_argument("--one", nargs=2, metavar=("METHOD", "AUTOCAST"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.interleaved:
        for method in args.methods.split(","):
            row = interleaved(method, args.rounds, args.steps or 5)
            print("INTERLEAVED " + json.dumps(row), flush=True)
            print(f"{method}: fp32 {row['fp32_s_per_step']:.2f} s/step, bf16 {row['bf16_s_per_step']:.2f} s/step, "
                  f"bf16 speed-up {row['speedup']:.2f}x (median of {row['measured_steps']} steps each)", flush=True)
        return 0
    if args.one:
        method, autocast = args.one
        print("RESULT " + json.dumps(one(method, autocast, args.steps or CASES[method][2])), flush=True)
        return 0
    rows: dict[tuple[str, str], dict] = {}
    for method in args.methods.split(","):
        for autocast in ("off", "bf16"):
            cmd = [sys.executable, __file__, "--one", method, autocast] + (["--steps", str(args.steps)] if args.steps else [])
            out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env={**os.environ, "TQDM_DISABLE": "1"})
            line = next((ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")), None)
            if line is None:
                print(f"{method} {autocast}: failed\n{out.stderr[-3000:]}", flush=True)
                continue
            rows[(method, autocast)] = json.loads(line.removeprefix("RESULT "))
            print(line, flush=True)
    print("\n| method | steps | fp32 s/step | bf16 s/step | bf16 speed-up | fp32 WER | bf16 WER | ΔWER |")
    print("|---|---|---|---|---|---|---|---|")
    for method in args.methods.split(","):
        a, b = rows.get((method, "off")), rows.get((method, "bf16"))
        if a and b:
            print(f"| {method} | {a['steps']} | {a['s_per_step']:.2f} | {b['s_per_step']:.2f} | "
                  f"{a['s_per_step'] / b['s_per_step']:.2f}x | {a['wer']:.4f} | {b['wer']:.4f} | {b['wer'] - a['wer']:+.4f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
