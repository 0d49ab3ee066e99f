"""The report's plots: WER against each searched parameter, an ablation's levels with their intervals, and the
Pareto front (drawn by `stats.plot_pareto`). Each writes one PNG and says whether it drew anything."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from platform import stats
from platform.report_analysis import Ablation, Pareto


def lines_by_other_keys(rows: list[dict[str, Any]], key: str, metric: str = "wer") -> dict[str, list[tuple[Any, float]]]:
    """(value of `key`, `metric`) points of the rows that have it, one sorted line per setting of the other searched parameters that vary
    (a grid's other axis, an ablation's seed), so that no line joins trials differing in more than `key`."""
    others = sorted(k for k in {k for r in rows for k in r["searched"]} - {key}
                    if len({json.dumps(r["searched"].get(k)) for r in rows}) > 1)
    groups: dict[str, list[tuple[Any, float]]] = {}
    for r in rows:
        label = ", ".join(f"{k}={r['searched'].get(k)}" for k in others) or "adapted"
        if r.get(metric) is not None:
            groups.setdefault(label, []).append((r["searched"][key], r[metric]))
    return {label: sorted(line) for label, line in sorted(groups.items())}


def wer_vs(rows: list[dict[str, Any]], key: str, baseline_wer: float | None, path: Path, title: str,
           baseline_natural: float | None = None) -> bool:
    """WER against one searched parameter (finished trials), with the untuned model's WER as a line; where trials
    have a natural-voice WER, it too (dashed, square markers), with its own untuned line. False, and no file,
    where the finished trials hold the parameter at fewer than two values."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = [r for r in rows if r["status"] == "FINISHED" and r["wer"] is not None and key in r["searched"]]
    points = [(r["searched"][key], r["wer"]) for r in done]
    if len({str(x) for x, _ in points}) < 2:  # one value (a factor held fixed, or no trial) plots no trend
        return False
    fig, ax = plt.subplots(figsize=(6, 4))
    numeric = all(isinstance(x, (int, float)) and not isinstance(x, bool) for x, _ in points)
    if numeric:
        for label, line in lines_by_other_keys(done, key).items():
            drawn = ax.plot([x for x, _ in line], [y for _, y in line], "o-", label=label)
            natural = lines_by_other_keys(done, key, "natural_wer").get(label, [])
            if natural:
                ax.plot([x for x, _ in natural], [y for _, y in natural], "s--", color=drawn[0].get_color(),
                        label=f"{label}, natural voice")
        xs = [x for x, _ in points]
        if min(xs) > 0 and max(xs) / min(xs) >= 16:
            ax.set_xscale("log", base=2)
        ax.set_xticks(sorted(set(xs)), [f"{x:.3g}" if isinstance(x, float) else str(x) for x in sorted(set(xs))],
                      rotation=20 if any(isinstance(x, float) for x in xs) else 0)
    else:
        labels = sorted({str(x) for x, _ in points})
        ax.plot([labels.index(str(x)) for x, _ in points], [y for _, y in points], "o", label="adapted")
        natural = [(x, r["natural_wer"]) for r in done if r.get("natural_wer") is not None for x in [r["searched"][key]]]
        if natural:
            ax.plot([labels.index(str(x)) for x, _ in natural], [y for _, y in natural], "s", mfc="none",
                    label="adapted, natural voice")
        ax.set_xticks(range(len(labels)), labels, rotation=20)
    if baseline_wer is not None:
        ax.axhline(baseline_wer, color="grey", linestyle="--", label=f"untuned ({baseline_wer:.3f})")
    if baseline_natural is not None and any(r.get("natural_wer") is not None for r in done):
        ax.axhline(baseline_natural, color="grey", linestyle=":", label=f"untuned, natural voice ({baseline_natural:.3f})")
    ax.set_xlabel(key)
    ax.set_ylabel("WER")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def ablation_levels(result: Ablation, path: Path, name: str) -> bool:
    """Bars of each level's mean WER, with its bootstrap interval (hatched: over utterances only) and its
    seeds' min and max as dots."""
    from matplotlib.figure import Figure

    points = [lv for lv in result.levels if lv.wer is not None and not math.isnan(lv.wer.mean)]
    if not points:
        return False
    fig = Figure(figsize=(max(5, 1.1 * len(points)), 4))
    ax = fig.add_subplot()
    xs = list(range(len(points)))
    means = [lv.wer.mean for lv in points]
    errs = [[lv.wer.mean - lv.wer.low for lv in points], [lv.wer.high - lv.wer.mean for lv in points]]
    colors = ["tab:orange" if str(lv.level) == str(result.baseline_level) else "tab:blue" for lv in points]
    bars = ax.bar(xs, means, yerr=errs, capsize=4, color=colors)
    for bar, lv in zip(bars, points, strict=True):
        if not lv.wer.over_seeds:
            bar.set_hatch("//")
    ax.scatter(xs + xs, [lv.wer.seed_min for lv in points] + [lv.wer.seed_max for lv in points], color="black", s=12,
               zorder=3, label="seed min / max")
    ax.set_xticks(xs, [str(lv.level) for lv in points], rotation=20)
    ax.set_ylim(bottom=0)
    ax.set_ylabel("WER (mean over seeds, 95% bootstrap CI)")
    hatched = "\nhatched: interval over utterances only (< 3 seeds)" if any(not lv.wer.over_seeds for lv in points) else ""
    ax.set_title(f"{name}: {result.evaluation_set} WER by {result.factor} (orange: baseline){hatched}", fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return True


def pareto(result: Pareto, path: Path) -> bool:
    """The completed trials on the first two objectives (the first on the y axis), the front highlighted."""
    if not result.completed:
        return False
    o, m = result.objectives, result.modes
    stats.plot_pareto(result.completed, result.front, o[1], o[0], path, modes=(m[1], m[0]))
    return True
