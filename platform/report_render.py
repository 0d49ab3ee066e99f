"""The report as text: the trials table (markdown and CSV), the sections' markdown from the analysis
(platform/report_analysis.py), the whole report as one self-contained HTML page, and the parent run's
description with its links into MLflow's UI."""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import math
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import markdown
from markdown.treeprocessors import Treeprocessor

from platform import stats
from platform.report_analysis import MIN_IMPORTANCE_TRIALS, Ablation, Importances, LevelResult, Pareto
from platform.report_data import COLUMNS

OPTIONAL_COLUMNS = ["wer_clean", "wer_noisy", "kd_loss", "wer_source", "kl_active_dims", "kl", "mse"]
"""Method-specific metrics, shown after COLUMNS when any trial of the sweep reports them (whistle: what it forgot
of the source domain, and its TLE's active latent dimensions, KL and reconstruction error)."""

COST_METRICS = ["model_size_mb", "peak_vram_mb", "peak_host_mem_mb", "train_samples_per_s"]
"""An ablation's cost columns (mean over seeds, min–max)."""


def _fmt(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        if 0 < abs(value) < 1e-3:
            return f"{value:.3g}"  # a learning rate of 2e-5 is not 0.0000
        return f"{value:.4f}" if abs(value) < 10 else f"{value:,.1f}"
    return str(value)


# --------------------------------------------------------------------------------------------- the trials


WHERE_MEASURED = ("val_wer", "natural_val_wer", "natural_wer", "natural_cer")
"""Columns of COLUMNS shown only where some trial has them: no natural-voice set exists for user or hub data, a
natural-voice validation set is scored only where a preset asks (data.natural_val_items), and
sweeps recorded before val_wer have none."""


def columns_for(rows: list[dict[str, Any]]) -> list[str]:
    """COLUMNS (less those of WHERE_MEASURED no row has; natural_wer_<domain> after natural_wer where some row has
    it), then the OPTIONAL_COLUMNS some row has a value for."""
    def has(k: str) -> bool:
        return any(r.get(k) is not None for r in rows)

    shown = [k for k in COLUMNS if k not in WHERE_MEASURED or has(k)]
    # other domains' natural-voice WER (data.natural_also) beside the trial's own
    others = sorted({k for r in rows for k in r if k.startswith("natural_wer_") and r[k] is not None})
    at = shown.index("natural_wer") + 1 if "natural_wer" in shown else len(shown)
    return shown[:at] + others + shown[at:] + [k for k in OPTIONAL_COLUMNS if has(k)]


def status_cell(row: dict[str, Any]) -> str:
    """A trial's status as the table shows it: a trial the scheduler stopped says at which step."""
    if row.get("early_stopped"):
        return f"STOPPED EARLY (step {row.get('stopped_at_step') or '?'})"
    return str(row["status"])


def table(rows: list[dict[str, Any]], keys: list[str], baseline: dict[str, float]) -> str:
    """One aligned markdown row per trial (its searched values, then the metric columns), and the untuned model."""
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


def table_csv(rows: list[dict[str, Any]], keys: list[str]) -> str:
    """The trials as CSV: unformatted values, and each trial's error."""
    buf = io.StringIO()
    writer = csv.writer(buf)
    cols = columns_for(rows)
    writer.writerow(["trial", "status", *keys, *cols, "error"])
    for r in rows:
        writer.writerow([r["trial"], r["status"], *[r["searched"].get(k) for k in keys], *[r.get(col) for col in cols],
                         r["error"]])
    return buf.getvalue()


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


# --------------------------------------------------------------------------------------------- the sections


def document(name: str, description: str, summary: str, cost: str, plots: list[str], sections: list[str]) -> str:
    """The whole report in markdown: title, question, trials table, cost, plots, then the sections."""
    lines = [f"# {name}", "", description, "", "## Trials", "", summary, "", cost]
    lines += [line for png in plots for line in ("", f"![{Path(png).stem.replace('_', ' ')}]({png})")]
    lines += [line for section in sections for line in ("", section)]
    return "\n".join(lines) + "\n"


def _interval_cell(iv: stats.LevelInterval) -> str:
    """`0.0630 [0.0512, 0.0761]`, marked † when the interval is over utterances only."""
    return f"{iv.mean:.4f} [{iv.low:.4f}, {iv.high:.4f}]" + ("" if iv.over_seeds else " †")


def _range_cell(values: list[float]) -> str:
    if not values:
        return "-"
    mean = sum(values) / len(values)
    return _fmt(mean) if len(values) == 1 or min(values) == max(values) else f"{_fmt(mean)} ({_fmt(min(values))}–{_fmt(max(values))})"


def _level_row(lv: LevelResult, ranked: bool) -> str:
    members = lv.members
    seeds = [r.get("wer") for r in members if r.get("wer") is not None]
    spread = f"{lv.wer.seed_min:.4f}–{lv.wer.seed_max:.4f}" if lv.wer else (
        f"{min(seeds):.4f}–{max(seeds):.4f}" if seeds else "-")
    cells = [str(lv.level), str(len(members)), _interval_cell(lv.wer) if lv.wer else _range_cell(seeds), spread,
             _interval_cell(lv.cer) if lv.cer else _range_cell([r["cer"] for r in members if r.get("cer") is not None])]
    if ranked:
        mins = [r["lora_rank_min"] for r in members if r.get("lora_rank_min") is not None]
        maxs = [r["lora_rank_max"] for r in members if r.get("lora_rank_max") is not None]
        ginis = [r["lora_rank_gini"] for r in members if r.get("lora_rank_gini") is not None]
        cells.append(f"{min(mins):g}–{max(maxs):g}, {sum(ginis) / len(ginis):.3f}" if ginis else "uniform")
    cells += [_range_cell([r[m] for r in members if r.get(m) is not None]) for m in COST_METRICS]
    return "| " + " | ".join(cells) + " |"


def ablation_section(result: Ablation, heatmaps: list[str], plot: str | None) -> str:
    """Per level: WER and CER intervals, the seeds' spread, ranks and costs; then each level against the
    baseline level; the rank heatmaps and the levels' plot (file names in the report's folder) where drawn."""
    on = "" if result.evaluation_set == "test" else f" on the {result.evaluation_set} set"
    lines = [f"## Ablation of `{result.factor}`{on} (baseline level: `{result.baseline_level}`)", "",
             f"Per level: the mean over seeds of the corpus WER and CER on the {result.n_utterances} "
             f"{result.evaluation_set} utterances "
             f"every trial decoded, with a 95% interval from a hierarchical bootstrap (seeds drawn with replacement, "
             f"then utterances, 2,000 resamples), which stays within the metric's range (never below 0). "
             f"Finished trials only; costs are the mean over seeds (min–max)."]
    if result.few_seeds:
        lines += ["", f"† fewer than {stats.MIN_SEEDS} seeds: the interval is over utterances only (it leaves out "
                      "seed-to-seed variation, which the seed range column shows: min–max of the seeds' WERs)."]
    header = ["level", "seeds", "WER [95% CI]", "WER seed range", "CER [95% CI]",
              *(["ranks min–max, Gini"] if result.ranked else []), *COST_METRICS]
    lines += ["", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += [_level_row(lv, result.ranked) for lv in result.levels]
    if heatmaps:
        lines += ["", "Ranks each module got (the first seed's trial of each level; AdaLoRA: after pruning). "
                      "Gini 0 is uniform; min–max and Gini over all seeds are in the table above.", ""]
        lines += [f"![{png}]({png})" for png in heatmaps]
    lines += ["", f"Each level against `{result.baseline_level}`. ΔWER and p: paired bootstrap over utterances "
                  "(10,000 resamples) of the corpus-WER difference, per-utterance errors averaged over seeds. ΔWER with "
                  f"seeds: hierarchical bootstrap (both levels' seeds redrawn, when each has {stats.MIN_SEEDS} or more; "
                  "utterances shared). MDE: the smallest difference this design detects at α = 0.05 with 80% power, "
                  "2.80 × the standard error of the latter; a difference that is not significant reads "
                  "\"no effect larger than MDE\".", "",
              "| level | WER | baseline WER | ΔWER [95% CI] | relative | p | ΔWER with seeds [95% CI] | MDE | reading |",
              "|---|---|---|---|---|---|---|---|---|"]
    if result.comparisons is None:
        lines.append("| (the baseline level has no finished trial with hypotheses) | | | | | | | | |")
    for cmp in result.comparisons or []:
        b, d = cmp.paired, cmp.with_seeds
        if cmp.significant:
            reading = f"{'worse' if b.delta > 0 else 'better'} by {abs(b.delta):.4f}"
        else:
            reading = f"no effect larger than {cmp.mde:.4f}"
        lines.append(f"| {cmp.level} | {b.wer_b:.4f} | {b.wer_a:.4f} | {b.delta:+.4f} [{b.ci_low:+.4f}, "
                     f"{b.ci_high:+.4f}] | {b.relative:+.1%} | {b.p_value:.4f} | {d.delta:+.4f} [{d.low:+.4f}, "
                     f"{d.high:+.4f}]{'' if d.over_seeds else ' †'} | {cmp.mde:.4f} | {reading} |")
    if plot:
        lines += ["", f"![{plot}]({plot})"]
    return "\n".join(lines)


def pareto_section(result: Pareto, plot: str | None) -> str:
    objectives = result.objectives
    lines = [f"## Pareto front ({', '.join(f'{o} {m}' for o, m in zip(objectives, result.modes, strict=True))})", "",
             "Completed trials only; early-stopped and failed trials are left out.", "",
             "| trial | " + " | ".join(objectives) + " | searched |", "|" + "---|" * (len(objectives) + 2)]
    for p in result.front:
        lines.append(f"| {p['trial']} | " + " | ".join(_fmt(p[o]) for o in objectives) + f" | `{json.dumps(p['searched'])}` |")
    if plot:
        lines += ["", f"![{plot}]({plot})"]
    return "\n".join(lines)


def importance_section(result: Importances) -> str:
    if result.n_trials < MIN_IMPORTANCE_TRIALS:
        return (f"## Parameter importances\n\nToo few completed trials ({result.n_trials}) to rank the parameters: "
                f"at least {MIN_IMPORTANCE_TRIALS} are needed.")
    if not result.values:
        return "## Parameter importances\n\nToo few completed trials."
    lines = [f"## Parameter importances for {result.metric} (Optuna, {result.n_trials} trials)", "",
             "| parameter | importance |", "|---|---|"]
    lines += [f"| {k} | {v:.3f} |" for k, v in sorted(result.values.items(), key=lambda kv: -kv[1])]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------- MLflow's UI


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


# --------------------------------------------------------------------------------------------- report.html

HTML_STYLE = ("body{font-family:system-ui,sans-serif;margin:1.5em;color:#1f2328;max-width:80em}"
              "table{border-collapse:collapse;margin:1em 0;font-size:90%}"
              "th,td{border:1px solid #d0d7de;padding:.3em .6em;text-align:left}th{background:#f6f8fa}"
              "tbody tr:nth-child(even){background:#fafbfc}code{background:#f6f8fa;padding:0 .2em}"
              "img{max-width:100%}figure{margin:1em 0}figcaption{color:#59636e;font-size:85%}")


def html_report(markdown_text: str, folder: Path, title: str) -> str:
    """The report as one self-contained HTML page, which MLflow's artifact viewer shows as it is: the markdown
    converted by Python-Markdown (with its tables extension), raw HTML in the text shown as text, and each
    image that stands alone in a paragraph embedded from `folder` as a data URI in a captioned figure (an
    image whose file is missing is left out)."""
    md = markdown.Markdown(extensions=["tables"])
    # Trial names, descriptions and error lines are data: a `<` in them is shown, never interpreted.
    md.preprocessors.deregister("html_block")
    md.inlinePatterns.deregister("html")
    md.treeprocessors.register(_Figures(md, folder), "figures", 5)  # after the inline patterns and prettify
    body = md.convert(markdown_text)
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{HTML_STYLE}</style></head><body>\n{body}\n</body></html>\n")


class _Figures(Treeprocessor):
    """Paragraphs of images only become figures (alt text as caption), each image embedded from `folder`."""

    def __init__(self, md: markdown.Markdown, folder: Path) -> None:
        super().__init__(md)
        self.folder = folder

    def run(self, root: ET.Element) -> None:
        for i, p in reversed(list(enumerate(root))):
            images = list(p)
            if p.tag != "p" or (p.text or "").strip() or not images or any(
                    el.tag != "img" or (el.tail or "").strip() for el in images):
                continue
            root.remove(p)
            for img in reversed(images):
                png = self.folder / img.get("src", "")
                if not png.is_file():
                    continue
                alt = img.get("alt", "")
                figure = ET.Element("figure")
                ET.SubElement(figure, "img", {"alt": alt, "src": f"data:image/png;base64,{base64.b64encode(png.read_bytes()).decode()}"})
                ET.SubElement(figure, "figcaption").text = alt
                figure.tail = "\n"
                root.insert(i, figure)
