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
from typing import Any

from platform import tracking

COLUMNS = ["wer", "cer", "peak_vram_mb", "peak_host_mem_mb", "train_samples_per_s", "model_size_mb",
           "compression_ratio", "trainable_params"]
# Method-specific metrics, shown after COLUMNS when any trial of the sweep reports them.
OPTIONAL_COLUMNS = ["wer_clean", "wer_noisy", "kd_loss"]


def columns_for(rows: list[dict[str, Any]]) -> list[str]:
    """COLUMNS, then the OPTIONAL_COLUMNS some row has a value for."""
    return COLUMNS + [k for k in OPTIONAL_COLUMNS if any(r.get(k) is not None for r in rows)]


def trial_rows(uri: str, parent_run_id: str) -> list[dict[str, Any]]:
    c = tracking.client(uri)
    parent = c.get_run(parent_run_id)
    runs = c.search_runs([parent.info.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{parent_run_id}'",
                         max_results=10000)
    rows = []
    for run in runs:
        searched = json.loads(run.data.tags.get("searched", "{}"))
        rows.append({**run.data.metrics, "trial": run.info.run_name, "run_id": run.info.run_id,
                     "status": run.info.status, "searched": searched, "error": run.data.tags.get("error", ""),
                     "early_stopped": run.data.tags.get(tracking.STOPPED_EARLY) == "true",
                     "stopped_at_step": run.data.tags.get(tracking.STOPPED_AT_STEP),
                     **{k: run.data.metrics.get(k) for k in COLUMNS}})
    return sorted(rows, key=lambda r: ([_sort_key(r["searched"][k]) for k in sorted(r["searched"])], r["trial"]))


def _sort_key(value: Any) -> tuple[int, float, str]:
    """Numbers in numeric order, before anything else in text order."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (0, float(value), "")
    return (1, 0.0, json.dumps(value))


def _fmt(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        if 0 < abs(value) < 1e-3:
            return f"{value:.3g}"  # a learning rate of 2e-5 is not 0.0000
        return f"{value:.4f}" if abs(value) < 10 else f"{value:,.1f}"
    return str(value)


def status_cell(row: dict[str, Any]) -> str:
    """A trial's status as the table shows it: a trial the scheduler stopped says at which step."""
    if row.get("early_stopped"):
        return f"STOPPED EARLY (step {row.get('stopped_at_step') or '?'})"
    return str(row["status"])


def table(rows: list[dict[str, Any]], keys: list[str], baseline: dict[str, float]) -> str:
    cols = columns_for(rows)
    header = ["trial", "status", *keys, *cols]
    body = [[r["trial"], status_cell(r), *[_fmt(r["searched"].get(k)) for k in keys], *[_fmt(r.get(c)) for c in cols]]
            for r in rows]
    if baseline:
        body.append(["untuned model", "BASELINE", *["-" for _ in keys], *[_fmt(baseline.get(c)) for c in cols]])
    widths = [max(len(str(x)) for x in col) for col in zip(header, *body, strict=True)]
    lines = [" | ".join(str(x).ljust(w) for x, w in zip(row, widths, strict=True)) for row in [header, *body]]
    lines.insert(1, "-|-".join("-" * w for w in widths))
    return "\n".join("| " + line + " |" for line in lines)


def lines_by_other_keys(rows: list[dict[str, Any]], key: str) -> dict[str, list[tuple[Any, float]]]:
    """(value of `key`, WER) points, one sorted line per setting of the other searched parameters that vary
    (a grid's other axis, an ablation's seed), so that no line joins trials differing in more than `key`."""
    others = sorted(k for k in {k for r in rows for k in r["searched"]} - {key}
                    if len({json.dumps(r["searched"].get(k)) for r in rows}) > 1)
    groups: dict[str, list[tuple[Any, float]]] = {}
    for r in rows:
        label = ", ".join(f"{k}={r['searched'].get(k)}" for k in others) or "adapted"
        groups.setdefault(label, []).append((r["searched"][key], r["wer"]))
    return {label: sorted(line) for label, line in sorted(groups.items())}


def plot(rows: list[dict[str, Any]], key: str, baseline_wer: float | None, path: Path, title: str) -> bool:
    """WER against one searched parameter (finished trials), with the untuned model's WER as a line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = [r for r in rows if r["status"] == "FINISHED" and r["wer"] is not None and key in r["searched"]]
    points = [(r["searched"][key], r["wer"]) for r in done]
    if not points:
        return False
    fig, ax = plt.subplots(figsize=(6, 4))
    numeric = all(isinstance(x, (int, float)) and not isinstance(x, bool) for x, _ in points)
    if numeric:
        for label, line in lines_by_other_keys(done, key).items():
            ax.plot([x for x, _ in line], [y for _, y in line], "o-", label=label)
        xs = [x for x, _ in points]
        if min(xs) > 0 and max(xs) / min(xs) >= 16:
            ax.set_xscale("log", base=2)
        ax.set_xticks(sorted(set(xs)), [f"{x:.3g}" if isinstance(x, float) else str(x) for x in sorted(set(xs))],
                      rotation=20 if any(isinstance(x, float) for x in xs) else 0)
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
    shown = keys + sorted({k for r in rows for k in r["searched"]} - set(keys))  # e.g. an ablation's seed
    text = table(rows, shown, baseline)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "summary.md").write_text(f"# {name}: summary\n\n{text}\n")
    buf = io.StringIO()
    writer = csv.writer(buf)
    cols = columns_for(rows)
    writer.writerow(["trial", "status", *keys, *cols, "error"])
    for r in rows:
        writer.writerow([r["trial"], r["status"], *[r["searched"].get(k) for k in keys], *[r.get(col) for col in cols],
                         r["error"]])
    (out_dir / "summary.csv").write_text(buf.getvalue())
    c.log_artifact(parent_run_id, str(out_dir / "summary.md"))
    c.log_artifact(parent_run_id, str(out_dir / "summary.csv"))
    for key in keys:
        png = out_dir / f"wer_vs_{key.replace('.', '_')}.png"
        if plot(rows, key, baseline.get("wer"), png, f"{name}: WER vs {key}"):
            c.log_artifact(parent_run_id, str(png))
    return text


MIN_IMPORTANCE_TRIALS = 4
"""Fewer completed trials than this rank parameters by noise (two trials gave lr 0.97, rank 0.03)."""

COST_METRICS = ["cer", "model_size_mb", "peak_vram_mb", "peak_host_mem_mb", "train_samples_per_s"]


def _hypotheses(c: Any, run_id: str, tmp: Path) -> list[dict[str, Any]] | None:
    try:
        path = c.download_artifacts(run_id, "hypotheses.jsonl", str(tmp))
    except Exception:
        return None
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def _char_errors(row: dict[str, Any]) -> tuple[int, int]:
    """(character edits, reference characters) of one hypotheses row, normalised as the trial's CER was."""
    import jiwer

    from trainables.blocks.metrics import normalize_text

    ref, hyp = normalize_text(row.get("reference", "")), normalize_text(row.get("hypothesis", ""))
    if not ref:
        return len(hyp), 0
    out = jiwer.process_characters(ref, hyp)
    return out.substitutions + out.deletions + out.insertions, len(ref)


def _error_tables(per_level: dict[str, list[list[dict[str, Any]]]]) -> tuple[dict[str, dict[str, Any]], int]:
    """Per level: word and character errors as (seeds × utterances) matrices over the utterances every trial
    of every level decoded (in one order), with their reference lengths; and that utterance count."""
    import numpy as np

    runs = [rows for level in per_level.values() for rows in level]
    common = sorted(set.intersection(*({r["id"] for r in rows} for rows in runs))) if runs else []
    tables: dict[str, dict[str, Any]] = {}
    for key, level in per_level.items():
        by_id = [{r["id"]: r for r in rows} for rows in level]
        chars = [[_char_errors(b[i]) for i in common] for b in by_id]
        tables[key] = {"wer": np.array([[b[i]["errors"] for i in common] for b in by_id], dtype=float),
                       "words": np.array([by_id[0][i]["ref_words"] for i in common], dtype=float),
                       "cer": np.array([[e for e, _ in c] for c in chars], dtype=float),
                       "chars": np.array([n for _, n in chars[0]], dtype=float)}
    return tables, len(common)


def _mean_errors(runs: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Per-utterance word errors averaged over a level's seeds (utterances every seed decoded)."""
    common = set.intersection(*({r["id"] for r in rows} for rows in runs))
    by_id: dict[str, dict[str, Any]] = {}
    for rows in runs:
        for r in rows:
            if r["id"] in common:
                entry = by_id.setdefault(r["id"], {"id": r["id"], "errors": 0.0, "ref_words": r["ref_words"]})
                entry["errors"] += r["errors"] / len(runs)
    return [by_id[i] for i in sorted(by_id)]


def _interval_cell(iv: Any) -> str:
    """`0.0630 [0.0512, 0.0761]`, marked † when the interval is over utterances only."""
    return f"{iv.mean:.4f} [{iv.low:.4f}, {iv.high:.4f}]" + ("" if iv.over_seeds else " †")


def _range_cell(values: list[float]) -> str:
    if not values:
        return "-"
    mean = sum(values) / len(values)
    return _fmt(mean) if len(values) == 1 or min(values) == max(values) else f"{_fmt(mean)} ({_fmt(min(values))}–{_fmt(max(values))})"


def ablation_section(c: Any, rows: list[dict[str, Any]], factor: str, baseline_level: Any, out_dir: Path,
                     name: str) -> str:
    """Per level: WER and CER with hierarchical-bootstrap intervals (seeds, then utterances), the seeds' spread,
    costs and the ranks' spread; each level against the baseline: paired bootstrap, the difference with seed
    variation, and the smallest difference the design could detect."""
    import tempfile

    from platform import stats

    finished = [r for r in rows if stats.is_completed(r) and factor in r["searched"]]
    by_level: dict[str, list[dict[str, Any]]] = {}
    for r in finished:
        by_level.setdefault(json.dumps(r["searched"][factor], sort_keys=True, default=str), []).append(r)
    order = [json.dumps(lv["level"], sort_keys=True, default=str) for lv in stats.level_summary(rows, factor, ["wer"])]
    per_level: dict[str, list[list[dict[str, Any]]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for i, r in enumerate(finished):
            hyps = _hypotheses(c, r["run_id"], Path(tmp) / str(i))
            if hyps:
                per_level.setdefault(json.dumps(r["searched"][factor], sort_keys=True, default=str), []).append(hyps)
        heatmaps = _rank_heatmaps(c, by_level, order, Path(tmp), out_dir, factor)
    tables, n_utt = _error_tables(per_level)
    intervals: dict[str, dict[str, Any]] = {}
    for key, t in tables.items():
        intervals[key] = {"wer": stats.hierarchical_bootstrap(t["wer"], t["words"])}
        if t["chars"].sum() > 0:
            intervals[key]["cer"] = stats.hierarchical_bootstrap(t["cer"], t["chars"])
    few = any(not iv["wer"].over_seeds for iv in intervals.values())
    ranked = any(r.get("lora_rank_gini") is not None for r in finished)
    lines = [f"## Ablation of `{factor}` (baseline level: `{baseline_level}`)", "",
             f"Per level: the mean over seeds of the corpus WER and CER on the {n_utt} test utterances every trial "
             f"decoded, with a 95% interval from a hierarchical bootstrap (seeds drawn with replacement, then "
             f"utterances, 2,000 resamples), which stays within the metric's range (never below 0). "
             f"Finished trials only; costs are the mean over seeds (min–max)."]
    if few:
        lines += ["", f"† fewer than {stats.MIN_SEEDS} seeds: the interval is over utterances only (it leaves out "
                      "seed-to-seed variation, which the seed range column shows: min–max of the seeds' WERs)."]
    cost_cols = [m for m in COST_METRICS if m != "cer"]
    header = ["level", "seeds", "WER [95% CI]", "WER seed range", "CER [95% CI]",
              *(["ranks min–max, Gini"] if ranked else []), *cost_cols]
    lines += ["", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    plotted = []
    for key in order:
        members = by_level.get(key, [])
        iv = intervals.get(key, {})
        wer = iv.get("wer")
        seeds = [r.get("wer") for r in members if r.get("wer") is not None]
        spread = f"{wer.seed_min:.4f}–{wer.seed_max:.4f}" if wer else (
            f"{min(seeds):.4f}–{max(seeds):.4f}" if seeds else "-")
        cells = [str(json.loads(key)), str(len(members)), _interval_cell(wer) if wer else _range_cell(seeds), spread,
                 _interval_cell(iv["cer"]) if "cer" in iv else _range_cell([r["cer"] for r in members if r.get("cer") is not None])]
        if ranked:
            mins = [r["lora_rank_min"] for r in members if r.get("lora_rank_min") is not None]
            maxs = [r["lora_rank_max"] for r in members if r.get("lora_rank_max") is not None]
            ginis = [r["lora_rank_gini"] for r in members if r.get("lora_rank_gini") is not None]
            cells.append(f"{min(mins):g}–{max(maxs):g}, {sum(ginis) / len(ginis):.3f}" if ginis else "uniform")
        cells += [_range_cell([r[m] for r in members if r.get(m) is not None]) for m in cost_cols]
        lines.append("| " + " | ".join(cells) + " |")
        if wer:
            plotted.append({"level": json.loads(key), "wer_mean": wer.mean, "wer_low": wer.low, "wer_high": wer.high,
                            "seed_min": wer.seed_min, "seed_max": wer.seed_max, "over_seeds": wer.over_seeds})
    if heatmaps:
        lines += ["", "Ranks each module got (the first seed's trial of each level; AdaLoRA: after pruning). "
                      "Gini 0 is uniform; min–max and Gini over all seeds are in the table above.", ""]
        lines += [f"![{png}]({png})" for png in heatmaps]
    base_key = json.dumps(baseline_level, sort_keys=True, default=str)
    lines += ["", f"Each level against `{baseline_level}`. ΔWER and p: paired bootstrap over utterances (10,000 "
                  "resamples) of the corpus-WER difference, per-utterance errors averaged over seeds. ΔWER with seeds: "
                  f"hierarchical bootstrap (both levels' seeds redrawn, when each has {stats.MIN_SEEDS} or more; "
                  "utterances shared). MDE: the smallest difference this design detects at α = 0.05 with 80% power, "
                  "2.80 × the standard error of the latter; a difference that is not significant reads "
                  "\"no effect larger than MDE\".", "",
              "| level | WER | baseline WER | ΔWER [95% CI] | relative | p | ΔWER with seeds [95% CI] | MDE | reading |",
              "|---|---|---|---|---|---|---|---|---|"]
    if base_key not in per_level:
        lines.append("| (the baseline level has no finished trial with hypotheses) | | | | | | | | |")
    else:
        base = _mean_errors(per_level[base_key])
        for key in order:
            if key == base_key or key not in per_level:
                continue
            aligned = stats.align(base, _mean_errors(per_level[key])) if len(base) else None
            if aligned is None or not len(aligned.ids):
                continue
            b = stats.paired_bootstrap(aligned.errors_a, aligned.errors_b, aligned.ref_words)
            d = stats.hierarchical_delta(tables[base_key]["wer"], tables[key]["wer"], tables[key]["words"])
            mde = stats.minimum_detectable_effect(d.se)
            if b.p_value < 0.05:
                reading = f"{'worse' if b.delta > 0 else 'better'} by {abs(b.delta):.4f}"
            else:
                reading = f"no effect larger than {mde:.4f}"
            lines.append(f"| {json.loads(key)} | {b.wer_b:.4f} | {b.wer_a:.4f} | {b.delta:+.4f} [{b.ci_low:+.4f}, "
                         f"{b.ci_high:+.4f}] | {b.relative:+.1%} | {b.p_value:.4f} | {d.delta:+.4f} [{d.low:+.4f}, "
                         f"{d.high:+.4f}]{'' if d.over_seeds else ' †'} | {mde:.4f} | {reading} |")
    png = out_dir / f"ablation_{factor.replace('.', '_')}.png"
    if plotted and _plot_levels(plotted, factor, baseline_level, png, name):
        lines += ["", f"![{png.name}]({png.name})"]
    return "\n".join(lines)


def _rank_heatmaps(c: Any, by_level: dict[str, list[dict[str, Any]]], order: list[str], tmp: Path, out_dir: Path,
                   factor: str) -> list[str]:
    """Copy the first trial's `lora_ranks.png` of each level that has one into `out_dir`; their file names."""
    import shutil

    names = []
    for key in order:
        for r in by_level.get(key, [])[:1]:
            try:
                src = c.download_artifacts(r["run_id"], "lora_ranks.png", str(tmp / f"ranks-{r['run_id']}"))
            except Exception:
                continue
            level = "".join(ch if ch.isalnum() else "_" for ch in str(json.loads(key)))
            name = f"lora_ranks_{factor.replace('.', '_')}_{level}.png"
            out_dir.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, out_dir / name)
            names.append(name)
    return names


def _plot_levels(levels: list[dict[str, Any]], factor: str, baseline_level: Any, path: Path, name: str) -> bool:
    """Bars of each level's mean WER, with its bootstrap interval (hatched: over utterances only) and its
    seeds' min and max as dots."""
    from matplotlib.figure import Figure

    points = [lv for lv in levels if not math.isnan(lv["wer_mean"])]
    if not points:
        return False
    fig = Figure(figsize=(max(5, 1.1 * len(points)), 4))
    ax = fig.add_subplot()
    xs = list(range(len(points)))
    means = [lv["wer_mean"] for lv in points]
    errs = [[lv["wer_mean"] - lv["wer_low"] for lv in points], [lv["wer_high"] - lv["wer_mean"] for lv in points]]
    colors = ["tab:orange" if str(lv["level"]) == str(baseline_level) else "tab:blue" for lv in points]
    bars = ax.bar(xs, means, yerr=errs, capsize=4, color=colors)
    for bar, lv in zip(bars, points, strict=True):
        if not lv["over_seeds"]:
            bar.set_hatch("//")
    ax.scatter(xs + xs, [lv["seed_min"] for lv in points] + [lv["seed_max"] for lv in points], color="black", s=12,
               zorder=3, label="seed min / max")
    ax.set_xticks(xs, [str(lv["level"]) for lv in points], rotation=20)
    ax.set_ylim(bottom=0)
    ax.set_ylabel("WER (mean over seeds, 95% bootstrap CI)")
    hatched = "\nhatched: interval over utterances only (< 3 seeds)" if any(not lv["over_seeds"] for lv in points) else ""
    ax.set_title(f"{name}: WER by {factor} (orange: baseline){hatched}", fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return True


def pareto_section(rows: list[dict[str, Any]], objectives: list[str], modes: list[str], out_dir: Path) -> str:
    from platform import stats

    points = [{**r, **{k: r.get(k) for k in objectives}} for r in rows]
    front = stats.pareto_front(points, objectives, modes)
    lines = [f"## Pareto front ({', '.join(f'{o} {m}' for o, m in zip(objectives, modes, strict=True))})", "",
             "Completed trials only; early-stopped and failed trials are left out.", "",
             "| trial | " + " | ".join(objectives) + " | searched |", "|" + "---|" * (len(objectives) + 2)]
    for p in front:
        lines.append(f"| {p['trial']} | " + " | ".join(_fmt(p[o]) for o in objectives) + f" | `{json.dumps(p['searched'])}` |")
    completed = [p for p in points if stats.is_completed(p) and all(p.get(o) is not None for o in objectives)]
    if completed:
        png = out_dir / f"pareto_{objectives[0]}_{objectives[1]}.png"
        stats.plot_pareto(completed, front, objectives[1], objectives[0], png, modes=(modes[1], modes[0]))
        lines += ["", f"![{png.name}]({png.name})"]
    return "\n".join(lines)


def importance_section(rows: list[dict[str, Any]], space: dict[str, Any], metric: str, mode: str) -> str:
    """Optuna's parameter importances, from a study rebuilt from the MLflow runs."""
    import optuna

    from platform import stats

    dists = {}
    for key, p in space.items():
        if p.get("values") is not None:
            dists[key] = optuna.distributions.CategoricalDistribution(p["values"])
        elif p["type"] == "int":
            dists[key] = optuna.distributions.IntDistribution(int(p["low"]), int(p["high"]), log=bool(p.get("log")))
        else:
            dists[key] = optuna.distributions.FloatDistribution(p["low"], p["high"], log=p["type"] == "loguniform")
    study = optuna.create_study(direction="minimize" if mode == "min" else "maximize")
    for r in rows:
        if stats.is_completed(r) and r.get(metric) is not None and set(dists) <= set(r["searched"]):
            study.add_trial(optuna.trial.create_trial(
                params={k: r["searched"][k] for k in dists}, distributions=dists, value=float(r[metric])))
    if len(study.trials) < MIN_IMPORTANCE_TRIALS:
        return (f"## Parameter importances\n\nToo few completed trials ({len(study.trials)}) to rank the parameters: "
                f"at least {MIN_IMPORTANCE_TRIALS} are needed.")
    importances = stats.param_importances(study)
    if not importances:
        return "## Parameter importances\n\nToo few completed trials."
    lines = [f"## Parameter importances for {metric} (Optuna, {len(study.trials)} trials)", "",
             "| parameter | importance |", "|---|---|"]
    lines += [f"| {k} | {v:.3f} |" for k, v in sorted(importances.items(), key=lambda kv: -kv[1])]
    return "\n".join(lines)


def sweep_report(uri: str, parent_run_id: str, out_dir: Path) -> str:
    """The whole report of a sweep, from MLflow alone: summary, ablation statistics, Pareto front,
    importances, plots. Written to `out_dir` and logged to the parent run; returns the markdown."""
    c = tracking.client(uri)
    parent = c.get_run(parent_run_id)
    tags = parent.data.tags
    name = tags.get("sweep", parent.info.run_name)
    keys = json.loads(tags.get("searched_keys", "[]"))
    baseline = {k.removeprefix("baseline_"): v for k, v in parent.data.metrics.items() if k.startswith("baseline_")}
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = write_summary(uri, parent_run_id, name, keys, baseline, out_dir)
    rows = trial_rows(uri, parent_run_id)
    sections = [f"# {name}", "", tags.get("description", ""), "", "## Trials", "", summary, "", cost_line(rows)]
    plots = [out_dir / f"wer_vs_{key.replace('.', '_')}.png" for key in keys]
    sections += [line for png in plots if png.is_file() for line in ("", f"![{png.stem.replace('_', ' ')}]({png.name})")]
    ablation = json.loads(tags.get("ablation", "null"))
    objectives = json.loads(tags.get("objectives", "null")) or [["wer"], ["min"]]
    space = json.loads(tags.get("space", "{}"))
    if ablation:
        sections += ["", ablation_section(c, rows, ablation["factor"], ablation["baseline"], out_dir, name)]
    if len(objectives[0]) >= 2:
        sections += ["", pareto_section(rows, objectives[0], objectives[1], out_dir)]
    if tags.get("searcher_type") in ("tpe", "random", "nsga2") and space:
        sections += ["", importance_section(rows, space, objectives[0][0], objectives[1][0])]
    text = "\n".join(sections) + "\n"
    (out_dir / "report.md").write_text(text)
    (out_dir / "report.html").write_text(html_report(text, out_dir, f"{name}: sweep report"))
    for f in sorted(out_dir.glob("*.png")) + [out_dir / "report.md", out_dir / "report.html"]:
        c.log_artifact(parent_run_id, str(f), "report")
    best = best_trial(rows, objectives[0][0], objectives[1][0])
    c.set_tag(parent_run_id, tracking.DESCRIPTION, parent_description(tags, parent.info.experiment_id, parent_run_id, best))
    return text


def cost_line(rows: list[dict[str, Any]]) -> str:
    """What the sweep's trials cost: their summed wall time and GPU-hours (each trial's `trial_wall_s`, `gpu_hours`),
    and the GPU energy of their training steps where it was measured (`energy_j`)."""
    timed = [r for r in rows if r.get("trial_wall_s") is not None]
    if not timed:
        return "Cost: not recorded."
    wall = sum(r["trial_wall_s"] for r in timed)
    gpu_hours = sum(r.get("gpu_hours") or 0.0 for r in timed)
    metered = [r["energy_j"] for r in rows if r.get("energy_j") is not None]
    energy = (f", {sum(metered) / 3.6e6:.3f} kWh of GPU energy in the training steps of {len(metered)} trials"
              if metered else "")
    return (f"Cost: {len(timed)} trial{'s' if len(timed) != 1 else ''}, {wall / 60:.1f} trial-minutes in all (mean {wall / len(timed) / 60:.1f} min), "
            f"{gpu_hours:.2f} GPU-hours{energy}.")


def best_trial(rows: list[dict[str, Any]], metric: str, mode: str) -> dict[str, Any] | None:
    """The finished trial with the best `metric` (None when none has it)."""
    scored = [r for r in rows if r["status"] == "FINISHED" and r.get(metric) is not None]
    if not scored:
        return None
    return (min if mode == "min" else max)(scored, key=lambda r: r[metric]) | {"metric": metric}


def trials_link(experiment_id: str, metric: str = "wer", mode: str = "min") -> str:
    """MLflow UI route (after its `#`) of an experiment's trials, best first: the child runs only (their
    `trial_id` tag), flat rather than folded under the sweep's run, in the UI's model-training mode
    (MLflow 3.17's UI chooses GenAI or model training globally, whatever the experiment's kind tag says)."""
    from urllib.parse import urlencode

    query = urlencode({"workflowType": "machine_learning", "searchFilter": "tags.trial_id LIKE '%'",
                       "orderByKey": f"metrics.`{metric}`", "orderByAsc": "true" if mode == "min" else "false"})
    return f"/experiments/{experiment_id}/runs?{query}"


def parent_description(tags: dict[str, str], experiment_id: str, run_id: str, best: dict[str, Any] | None = None) -> str:
    """The parent run's description (markdown, shown on its page in MLflow): what the sweep asks, what it
    searches, a link to the report, and (once there is one) its best trial and how to use it."""
    keys = json.loads(tags.get("searched_keys", "[]"))
    objectives = json.loads(tags.get("objectives", "null")) or [["wer"], ["min"]]
    goal = ", ".join(f"{m} ({d})" for m, d in zip(objectives[0], objectives[1], strict=True))
    link = f"#/experiments/{experiment_id}/runs/{run_id}/artifactPath/report/report.html?workflowType=machine_learning"
    lines = [f"**{tags.get('sweep', '')}**: {tags.get('description', '')}", "",
             f"Searched: {', '.join(f'`{k}`' for k in keys) or 'nothing (one configuration)'}; objective {goal}; "
             f"method `{tags.get('method', '')}`, preset `{tags.get('preset', '')}`. Each child run is one trial, "
             f"named by what it tried: [all trials, best first](#{trials_link(experiment_id, objectives[0][0], objectives[1][0])}).",
             "", f"Report: [report/report.html]({link}) (tables and plots; also report/report.md), written when the sweep ends."]
    if best is not None:
        m = best["metric"]
        lines += ["", f"Best trial by {m}: [{best['trial']}](#/experiments/{experiment_id}/runs/{best['run_id']}"
                      "?workflowType=machine_learning), "
                      f"{m} {best[m]:.4f}. Transcribe with it: `python -m platform.transcribe {run_id} FILES...`; "
                      f"export it: `python -m platform.export {run_id} OUT_DIR` (this run's id stands for its best trial)."]
    return "\n".join(lines)


# --------------------------------------------------------------------------- report.html


def _inline(text: str) -> str:
    """Markdown's inline code and bold, on HTML-escaped text."""
    import html
    import re

    out = html.escape(text, quote=False)
    out = re.sub(r"`([^`]+)`", r"<code>\1</code>", out)
    return re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", out)


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def html_report(markdown: str, folder: Path, title: str) -> str:
    """The report as one self-contained HTML page (its plots embedded as data URIs), which MLflow's artifact
    viewer shows as it is. Reads the subset of markdown the report is written in: headings, paragraphs,
    pipe tables, images on their own line, inline code and bold."""
    import base64
    import html
    import re

    body: list[str] = []
    paragraph: list[str] = []
    lines = markdown.splitlines()

    def flush() -> None:
        if paragraph:
            body.append(f"<p>{_inline(' '.join(paragraph))}</p>")
            paragraph.clear()

    i = 0
    while i < len(lines):
        line = lines[i].rstrip()
        image = re.fullmatch(r"!\[([^\]]*)\]\(([^)]+)\)", line.strip())
        if not line.strip():
            flush()
        elif line.startswith("#"):
            flush()
            level = min(len(line) - len(line.lstrip("#")), 6)
            body.append(f"<h{level}>{_inline(line.lstrip('#').strip())}</h{level}>")
        elif image:
            flush()
            png = folder / image.group(2)
            if png.is_file():
                data = base64.b64encode(png.read_bytes()).decode()
                body.append(f'<figure><img alt="{html.escape(image.group(1))}" src="data:image/png;base64,{data}">'
                            f"<figcaption>{html.escape(image.group(1))}</figcaption></figure>")
        elif line.lstrip().startswith("|"):
            flush()
            rows = []
            while i < len(lines) and lines[i].lstrip().startswith("|"):
                rows.append(_cells(lines[i]))
                i += 1
            rows = [r for r in rows if not all(re.fullmatch(r":?-+:?", c) for c in r if c)]
            head, *rest = rows
            body.append("<table><thead><tr>" + "".join(f"<th>{_inline(c)}</th>" for c in head) + "</tr></thead><tbody>"
                        + "".join("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in r) + "</tr>" for r in rest)
                        + "</tbody></table>")
            continue
        else:
            paragraph.append(line.strip())
        i += 1
    flush()
    style = ("body{font-family:system-ui,sans-serif;margin:1.5em;color:#1f2328;max-width:80em}"
             "table{border-collapse:collapse;margin:1em 0;font-size:90%}"
             "th,td{border:1px solid #d0d7de;padding:.3em .6em;text-align:left}th{background:#f6f8fa}"
             "tbody tr:nth-child(even){background:#fafbfc}code{background:#f6f8fa;padding:0 .2em}"
             "img{max-width:100%}figure{margin:1em 0}figcaption{color:#59636e;font-size:85%}")
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{style}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")


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
    out = Path(args.out) if args.out else root / "reports" / args.name
    print(sweep_report(uri, run_id, out))
    print(f"written to {out} and logged to run {run_id}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
