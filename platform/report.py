"""The end-of-sweep summary: one row per trial, and WER against each searched parameter.

Everything is read back from MLflow, so `python -m platform.report NAME` re-creates the summary
of a finished sweep on any machine that reaches its tracking store.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import sys
from pathlib import Path
from platform import tracking
from typing import Any

COLUMNS = ["wer", "cer", "peak_vram_mb", "peak_host_mem_mb", "train_samples_per_s", "model_size_mb",
           "compression_ratio", "trainable_params"]


def trial_rows(uri: str, parent_run_id: str) -> list[dict[str, Any]]:
    c = tracking.client(uri)
    parent = c.get_run(parent_run_id)
    runs = c.search_runs([parent.info.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{parent_run_id}'",
                         max_results=10000)
    rows = []
    for run in runs:
        searched = json.loads(run.data.tags.get("searched", "{}"))
        rows.append({"trial": run.info.run_name, "run_id": run.info.run_id, "status": run.info.status, "searched": searched,
                     "error": run.data.tags.get("error", ""), **{k: run.data.metrics.get(k) for k in COLUMNS}})
    return sorted(rows, key=lambda r: (json.dumps(r["searched"], sort_keys=True), r["trial"]))


def _fmt(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 10 else f"{value:,.1f}"
    return str(value)


def table(rows: list[dict[str, Any]], keys: list[str], baseline: dict[str, float]) -> str:
    header = ["trial", "status", *keys, *COLUMNS]
    body = [[r["trial"], r["status"], *[_fmt(r["searched"].get(k)) for k in keys], *[_fmt(r[c]) for c in COLUMNS]]
            for r in rows]
    if baseline:
        body.append(["untuned model", "BASELINE", *["-" for _ in keys], *[_fmt(baseline.get(c)) for c in COLUMNS]])
    widths = [max(len(str(x)) for x in col) for col in zip(header, *body, strict=True)]
    lines = [" | ".join(str(x).ljust(w) for x, w in zip(row, widths, strict=True)) for row in [header, *body]]
    lines.insert(1, "-|-".join("-" * w for w in widths))
    return "\n".join("| " + line + " |" for line in lines)


def plot(rows: list[dict[str, Any]], key: str, baseline_wer: float | None, path: Path, title: str) -> bool:
    """WER against one searched parameter (finished trials), with the untuned model's WER as a line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = [(r["searched"][key], r["wer"]) for r in rows
              if r["status"] == "FINISHED" and r["wer"] is not None and key in r["searched"]]
    if not points:
        return False
    fig, ax = plt.subplots(figsize=(6, 4))
    numeric = all(isinstance(x, (int, float)) and not isinstance(x, bool) for x, _ in points)
    if numeric:
        points.sort()
        xs = [x for x, _ in points]
        ax.plot(xs, [y for _, y in points], "o-", label="adapted")
        if min(xs) > 0 and max(xs) / min(xs) >= 16:
            ax.set_xscale("log", base=2)
        ax.set_xticks(sorted(set(xs)), [str(x) for x in sorted(set(xs))])
    else:
        labels = sorted({str(x) for x, _ in points})
        ax.plot([labels.index(str(x)) for x, _ in points], [y for _, y in points], "o", label="adapted")
        ax.set_xticks(range(len(labels)), labels, rotation=20)
    if baseline_wer is not None:
        ax.axhline(baseline_wer, color="grey", linestyle="--", label=f"untuned ({baseline_wer:.3f})")
    ax.set_xlabel(key)
    ax.set_ylabel("WER")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def write_summary(uri: str, parent_run_id: str, name: str, keys: list[str], baseline: dict[str, float],
                  out_dir: Path) -> str:
    """Print-ready summary table; logs summary.md, summary.csv and plots to the parent run."""
    c = tracking.client(uri)
    rows = trial_rows(uri, parent_run_id)
    keys = keys or sorted({k for r in rows for k in r["searched"]})
    text = table(rows, keys, baseline)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "summary.md").write_text(f"# {name}: summary\n\n{text}\n")
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["trial", "status", *keys, *COLUMNS, "error"])
    for r in rows:
        writer.writerow([r["trial"], r["status"], *[r["searched"].get(k) for k in keys], *[r[col] for col in COLUMNS],
                         r["error"]])
    (out_dir / "summary.csv").write_text(buf.getvalue())
    c.log_artifact(parent_run_id, str(out_dir / "summary.md"))
    c.log_artifact(parent_run_id, str(out_dir / "summary.csv"))
    for key in keys:
        png = out_dir / f"wer_vs_{key.replace('.', '_')}.png"
        if plot(rows, key, baseline.get("wer"), png, f"{name}: WER vs {key}"):
            c.log_artifact(parent_run_id, str(png))
    return text


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m platform.report", description="Re-create a sweep's summary from MLflow.")
    p.add_argument("name", help="sweep (experiment) name")
    p.add_argument("--run-id", help="parent run id (default: the latest parent run of the experiment)")
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI or sqlite:///mlflow.db)")
    p.add_argument("--out", default=None, help="folder for the files (default: ./reports/NAME)")
    args = p.parse_args(argv)
    root = Path(__file__).resolve().parents[1]
    uri = args.tracking_uri or tracking.default_tracking_uri(root)
    c = tracking.client(uri)
    exp = c.get_experiment_by_name(args.name)
    if exp is None:
        print(f"error: no MLflow experiment named {args.name!r} in {uri}", file=sys.stderr)
        return 2
    run_id = args.run_id
    if run_id is None:
        parents = [r for r in c.search_runs([exp.experiment_id], order_by=["attributes.start_time DESC"])
                   if "mlflow.parentRunId" not in r.data.tags]
        if not parents:
            print(f"error: experiment {args.name!r} has no sweep run", file=sys.stderr)
            return 2
        run_id = parents[0].info.run_id
    parent = c.get_run(run_id)
    baseline = {k.removeprefix("baseline_"): v for k, v in parent.data.metrics.items() if k.startswith("baseline_")}
    keys = json.loads(parent.data.tags.get("searched_keys", "[]"))
    out = Path(args.out) if args.out else root / "reports" / args.name
    print(write_summary(uri, run_id, args.name, keys, baseline, out))
    print(f"written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
