"""Rehearse every shipped sweep's gpu preset end to end on CPU, one after the other, and print what each did.

    .venv/bin/python benchmarks/rehearse_all.py [--only NAME,NAME] [--skip NAME,NAME] [--out DIR] [--json PATH]

Each sweep runs as `python -m platform.sweep NAME --preset gpu --rehearse --no-register` in its own process,
with its own MLflow store and storage under --out (default: a temporary folder) and a private Ray
(`RAY_ADDRESS` cleared), so one failing preset cannot disturb the next. Measured per sweep: wall time (process
start to exit), exit status, and from its MLflow store the number of trials that FINISHED and the best `val_wer`.
A failed sweep's last console line is printed beside it. The last line is `RESULT {json}` (also written to
--json). Exit status: 0 when every rehearsal exited 0, else 1.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULT_PREFIX = "RESULT "


def rehearse(name: str, folder: Path) -> dict[str, Any]:
    """One sweep's rehearsal in `folder`: its wall time, exit status, finished trials and best val_wer."""
    from mlflow.tracking import MlflowClient

    folder.mkdir(parents=True, exist_ok=True)
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    cmd = [sys.executable, "-m", "platform.sweep", name, "--preset", "gpu", "--rehearse", "--no-register",
           "--tracking-uri", uri, "--storage", str(folder / "results")]
    started = time.monotonic()
    with open(folder / "console.log", "w") as log:
        rc = subprocess.run(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                            env={**os.environ, "RAY_ADDRESS": ""}).returncode
    wall = time.monotonic() - started
    row: dict[str, Any] = {"sweep": name, "rc": rc, "wall_s": round(wall, 1), "finished": 0, "trials": 0,
                           "best_val_wer": None, "last_line": ""}
    lines = [line for line in (folder / "console.log").read_text(errors="replace").splitlines() if line.strip()]
    row["last_line"] = lines[-1][:200] if lines else ""
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        trials = [r for r in client.search_runs([exp.experiment_id]) if "mlflow.parentRunId" in r.data.tags]
        row["trials"] = len(trials)
        row["finished"] = sum(r.info.status == "FINISHED" for r in trials)
        vals = [r.data.metrics["val_wer"] for r in trials if "val_wer" in r.data.metrics]
        row["best_val_wer"] = round(min(vals), 4) if vals else None
    return row


def names(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


def main(argv: list[str] | None = None) -> int:
    sys.path.insert(0, str(ROOT))
    from platform import spaces

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--only", type=names, default=None, help="these sweeps (comma-separated), default: every one")
    p.add_argument("--skip", type=names, default=[], help="leave these sweeps out (comma-separated)")
    p.add_argument("--out", type=Path, default=None, help="where each sweep's store, results and console go")
    p.add_argument("--json", type=Path, default=None, help="also write the RESULT line's JSON here")
    args = p.parse_args(argv)
    available = spaces.available()
    chosen = args.only or available
    unknown = sorted(set(chosen + args.skip) - set(available))
    if unknown:
        print(f"error: no sweep named {', '.join(unknown)}; there are: {', '.join(available)}", file=sys.stderr)
        return 2
    chosen = [n for n in chosen if n not in args.skip]
    out = args.out or Path(tempfile.mkdtemp(prefix="rehearse-all-"))
    rows = []
    print(f"{'sweep':<22} {'exit':>4} {'wall':>8} {'finished':>9} {'best val_wer':>13}", flush=True)
    for name in chosen:
        row = rehearse(name, out / name)
        rows.append(row)
        best = "-" if row["best_val_wer"] is None else f"{row['best_val_wer']:.4f}"
        print(f"{name:<22} {row['rc']:>4} {row['wall_s'] / 60:>6.1f} m {row['finished']:>4}/{row['trials']:<4} "
              f"{best:>13}" + ("" if row["rc"] == 0 else f"   {row['last_line']}"), flush=True)
    total = sum(r["wall_s"] for r in rows)
    failed = [r["sweep"] for r in rows if r["rc"] != 0]
    print(f"{len(rows)} rehearsals in {total / 60:.1f} min, {len(failed)} failed" + (f": {', '.join(failed)}" if failed else "")
          + f"; consoles and stores under {out}")
    result = {"rows": rows, "total_s": round(total, 1), "failed": failed, "cpus": os.cpu_count()}
    if args.json:
        args.json.write_text(json.dumps(result))
    print(RESULT_PREFIX + json.dumps(result))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
