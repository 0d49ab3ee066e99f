"""The end-of-sweep report: the trials table, WER against each searched parameter, and the sections the sweep
asks for (ablation statistics, Pareto front, parameter importances), as markdown, CSV, plots and one HTML page.

Everything is read back from MLflow (platform/report_data.py), analysed (platform/report_analysis.py) and
rendered (platform/report_render.py, platform/report_plots.py), so `python -m platform.report NAME`
re-creates the report of a finished sweep on any machine that reaches its tracking store.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from platform import report_analysis, report_data, report_plots, report_render, tracking
from platform.report_data import SweepRecord


def sweep_report(uri: str, parent_run_id: str, out_dir: Path) -> str:
    """The whole report of a sweep, from MLflow alone: summary, ablation statistics, Pareto front,
    importances, plots. Written to `out_dir` and logged to the parent run; returns the markdown."""
    c = tracking.client(uri)
    record = report_data.sweep_record(c, parent_run_id)
    rows = report_data.trial_rows(uri, parent_run_id)
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = write_summary(c, parent_run_id, record, rows, out_dir)
    plots = [png.name for png in (wer_plot(out_dir, key) for key in record.searched_keys) if png.is_file()]
    text = report_render.document(record.name, record.tags.get("description", ""), summary,
                                  report_render.cost_line(rows), plots, sections(c, record, rows, out_dir))
    (out_dir / "report.md").write_text(text)
    (out_dir / "report.html").write_text(report_render.html_report(text, out_dir, f"{record.name}: sweep report"))
    for f in sorted(out_dir.glob("*.png")) + [out_dir / "report.md", out_dir / "report.html"]:
        c.log_artifact(parent_run_id, str(f), "report")
    best = report_analysis.best_trial(rows, record.metric, record.mode)
    c.set_tag(parent_run_id, tracking.DESCRIPTION,
              report_render.parent_description(record.tags, record.experiment_id, parent_run_id, best))
    return text


def write_summary(c: Any, parent_run_id: str, record: SweepRecord, rows: list[dict[str, Any]], out_dir: Path) -> str:
    """The trials table (returned); summary.md, summary.csv and a WER plot per searched key, logged to the
    parent run."""
    keys = record.searched_keys or sorted({k for r in rows for k in r["searched"]})
    shown = keys + sorted({k for r in rows for k in r["searched"]} - set(keys))  # e.g. an ablation's seed
    text = report_render.table(rows, shown, record.baseline)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "summary.md").write_text(f"# {record.name}: summary\n\n{text}\n")
    (out_dir / "summary.csv").write_text(report_render.table_csv(rows, keys))
    c.log_artifact(parent_run_id, str(out_dir / "summary.md"))
    c.log_artifact(parent_run_id, str(out_dir / "summary.csv"))
    for key in keys:
        png = wer_plot(out_dir, key)
        if report_plots.wer_vs(rows, key, record.baseline.get("wer"), png, f"{record.name}: WER vs {key}",
                               record.baseline.get("natural_wer")):
            c.log_artifact(parent_run_id, str(png))
    return text


def wer_plot(out_dir: Path, key: str) -> Path:
    """The file of the plot of WER against searched key `key`."""
    return out_dir / f"wer_vs_{key.replace('.', '_')}.png"


def sections(c: Any, record: SweepRecord, rows: list[dict[str, Any]], out_dir: Path) -> list[str]:
    """The sections the sweep asks for: an ablation's statistics, a multi-objective sweep's Pareto front, a
    sampled search's parameter importances."""
    out = []
    if record.ablation:
        out.append(ablation_section(c, record, rows, out_dir))
    objectives, modes = record.objectives
    if len(objectives) >= 2:
        pareto = report_analysis.pareto(rows, objectives, modes)
        png = out_dir / f"pareto_{objectives[0]}_{objectives[1]}.png"
        out.append(report_render.pareto_section(pareto, png.name if report_plots.pareto(pareto, png) else None))
    if record.tags.get("searcher_type") in ("tpe", "random", "nsga2") and record.space:
        out.append(report_render.importance_section(
            report_analysis.importances(rows, record.space, record.metric, record.mode)))
    return out


EVALUATION_SETS = (("test", "hypotheses.jsonl", ""), ("natural-voice test", "hypotheses_natural.jsonl", "_natural"))
"""(name in words, the trials' hypotheses artifact, plot file suffix) of the sets an ablation compares levels on:
the espeak test split, then the natural-voice test set where the trials were scored on one."""


def ablation_section(c: Any, record: SweepRecord, rows: list[dict[str, Any]], out_dir: Path) -> str:
    """Read the finished trials' hypotheses and rank heatmaps, compare the levels on each evaluation set that
    has hypotheses, draw and word the result."""
    factor, baseline_level = record.ablation["factor"], record.ablation["baseline"]
    levels = report_analysis.ablation_levels(rows, factor)
    parts = []
    with tempfile.TemporaryDirectory() as tmp:
        heatmaps = rank_heatmaps(c, levels, Path(tmp), out_dir)
        for set_name, artifact, suffix in EVALUATION_SETS:
            hypotheses = {r["run_id"]: report_data.hypotheses(c, r["run_id"], Path(tmp) / f"{suffix}{i}", artifact)
                          for i, r in enumerate(levels.finished)}
            if suffix and not any(hypotheses.values()):
                continue  # no natural-voice set for this data (a hub or user data set)
            result = report_analysis.ablation(levels, baseline_level, hypotheses, set_name)
            png = out_dir / f"ablation_{factor.replace('.', '_')}{suffix}.png"
            drawn = report_plots.ablation_levels(result, png, record.name)
            parts.append(report_render.ablation_section(result, [] if suffix else heatmaps, png.name if drawn else None))
    return "\n\n".join(parts)


def rank_heatmaps(c: Any, levels: report_analysis.Levels, tmp: Path, out_dir: Path) -> list[str]:
    """The first trial's `lora_ranks.png` of each level that has one, copied into `out_dir`; their file names."""
    names = []
    for key in levels.order:
        for r in levels.by_level.get(key, [])[:1]:
            level = "".join(ch if ch.isalnum() else "_" for ch in str(json.loads(key)))
            name = f"lora_ranks_{levels.factor.replace('.', '_')}_{level}.png"
            if report_data.rank_heatmap(c, r["run_id"], tmp, out_dir / name):
                names.append(name)
    return names


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
    run_id = args.run_id or report_data.latest_parent_run(c, exp.experiment_id)
    if run_id is None:
        print(f"error: experiment {args.name!r} has no sweep run", file=sys.stderr)
        return 2
    out = Path(args.out) if args.out else root / "reports" / args.name
    print(sweep_report(uri, run_id, out))
    print(f"written to {out} and logged to run {run_id}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
