"""The report's statistics, from trial rows and hypotheses already read (platform/report_data.py), with the
functions of platform/stats.py: an ablation's intervals and comparisons, the Pareto front, parameter
importances, the best trial. Results are plain values; platform/report_render.py words and draws them."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from platform import stats

ALPHA = 0.05
"""Significance level of the ablation's comparisons."""

MIN_IMPORTANCE_TRIALS = 4
"""Fewer completed trials than this rank parameters by noise (two trials gave lr 0.97, rank 0.03)."""


def level_key(level: Any) -> str:
    """A level (any JSON value, lists included) as a dict key."""
    return json.dumps(level, sort_keys=True, default=str)


# --------------------------------------------------------------------------------------------- ablation


@dataclass
class Levels:
    """An ablation's finished trials by level, in the report's order of levels."""

    factor: str
    finished: list[dict[str, Any]]
    """Completed trials that have a level of the factor."""
    by_level: dict[str, list[dict[str, Any]]]
    """level_key -> its finished trials."""
    order: list[str]
    """level_keys, in `stats.level_summary`'s order."""


def ablation_levels(rows: list[dict[str, Any]], factor: str) -> Levels:
    finished = [r for r in rows if stats.is_completed(r) and factor in r["searched"]]
    by_level: dict[str, list[dict[str, Any]]] = {}
    for r in finished:
        by_level.setdefault(level_key(r["searched"][factor]), []).append(r)
    order = [level_key(lv["level"]) for lv in stats.level_summary(rows, factor, ["wer"])]
    return Levels(factor, finished, by_level, order)


@dataclass
class LevelResult:
    """One level: its trials and its WER and CER intervals over seeds and utterances (None without hypotheses)."""

    level: Any
    members: list[dict[str, Any]]
    wer: stats.LevelInterval | None = None
    cer: stats.LevelInterval | None = None


@dataclass
class Comparison:
    """One level against the baseline level."""

    level: Any
    paired: stats.BootstrapResult
    """Paired bootstrap over utterances of the corpus-WER difference (errors averaged over seeds)."""
    with_seeds: stats.DeltaInterval
    """Hierarchical bootstrap of the difference, seeds redrawn where each level has enough."""
    mde: float
    """The smallest difference the design detects (from `with_seeds`' standard error)."""

    @property
    def significant(self) -> bool:
        return self.paired.p_value < ALPHA


@dataclass
class Ablation:
    """The statistics of a one-factor ablation."""

    factor: str
    baseline_level: Any
    n_utterances: int
    """Test utterances every trial with hypotheses decoded (the statistics' common set)."""
    levels: list[LevelResult]
    comparisons: list[Comparison] | None = field(default=None)
    """Each other level against the baseline level; None when the baseline level has no hypotheses."""
    evaluation_set: str = "test"
    """Which utterances the hypotheses are of, in words: "test" (the espeak test split) or "natural-voice test"."""

    @property
    def few_seeds(self) -> bool:
        """Some level's interval is over utterances only (fewer than `stats.MIN_SEEDS` seeds)."""
        return any(lv.wer is not None and not lv.wer.over_seeds for lv in self.levels)

    @property
    def ranked(self) -> bool:
        """Some trial allocated LoRA ranks per module (its `lora_rank_*` metrics)."""
        return any(r.get("lora_rank_gini") is not None for lv in self.levels for r in lv.members)


def ablation(levels: Levels, baseline_level: Any, hypotheses: dict[str, list[dict[str, Any]] | None],
             evaluation_set: str = "test") -> Ablation:
    """Per level: WER and CER with hierarchical-bootstrap intervals (seeds, then utterances); each level against
    the baseline: paired bootstrap, the difference with seed variation, and the minimum detectable effect.
    `hypotheses`: run id -> that trial's per-utterance rows on `evaluation_set` (trials without any are left out)."""
    per_level: dict[str, list[list[dict[str, Any]]]] = {}
    for r in levels.finished:
        if hypotheses.get(r["run_id"]):
            per_level.setdefault(level_key(r["searched"][levels.factor]), []).append(hypotheses[r["run_id"]])
    tables, n_utt = _error_tables(per_level)
    results = []
    for key in levels.order:
        result = LevelResult(json.loads(key), levels.by_level.get(key, []))
        if key in tables:
            t = tables[key]
            result.wer = stats.hierarchical_bootstrap(t["wer"], t["words"])
            if t["chars"].sum() > 0:
                result.cer = stats.hierarchical_bootstrap(t["cer"], t["chars"])
        results.append(result)
    out = Ablation(levels.factor, baseline_level, n_utt, results, evaluation_set=evaluation_set)
    base_key = level_key(baseline_level)
    if base_key in per_level:
        out.comparisons = _comparisons(levels.order, base_key, per_level, tables)
    return out


def _comparisons(order: list[str], base_key: str, per_level: dict[str, list[list[dict[str, Any]]]],
                 tables: dict[str, dict[str, Any]]) -> list[Comparison]:
    base = _mean_errors(per_level[base_key])
    out = []
    for key in order:
        if key == base_key or key not in per_level:
            continue
        aligned = stats.align(base, _mean_errors(per_level[key])) if len(base) else None
        if aligned is None or not len(aligned.ids):
            continue
        paired = stats.paired_bootstrap(aligned.errors_a, aligned.errors_b, aligned.ref_words)
        delta = stats.hierarchical_delta(tables[base_key]["wer"], tables[key]["wer"], tables[key]["words"])
        out.append(Comparison(json.loads(key), paired, delta, stats.minimum_detectable_effect(delta.se)))
    return out


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


# --------------------------------------------------------------------------------------------- the others


@dataclass
class Pareto:
    objectives: list[str]
    modes: list[str]
    front: list[dict[str, Any]]
    """The non-dominated completed trials."""
    completed: list[dict[str, Any]]
    """Completed trials that report every objective (what the plot shows)."""


def pareto(rows: list[dict[str, Any]], objectives: list[str], modes: list[str]) -> Pareto:
    points = [{**r, **{k: r.get(k) for k in objectives}} for r in rows]
    front = stats.pareto_front(points, objectives, modes)
    completed = [p for p in points if stats.is_completed(p) and all(p.get(o) is not None for o in objectives)]
    return Pareto(objectives, modes, front, completed)


@dataclass
class Importances:
    metric: str
    n_trials: int
    """Completed trials that report the metric and every searched parameter."""
    values: dict[str, float]
    """Parameter -> importance (empty: too few trials)."""


def importances(rows: list[dict[str, Any]], space: dict[str, Any], metric: str, mode: str) -> Importances:
    """Optuna's parameter importances, from a study rebuilt from the trial rows (fewer than
    MIN_IMPORTANCE_TRIALS completed trials: none)."""
    import optuna

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
    n = len(study.trials)
    return Importances(metric, n, stats.param_importances(study) if n >= MIN_IMPORTANCE_TRIALS else {})


def best_trial(rows: list[dict[str, Any]], metric: str, mode: str) -> dict[str, Any] | None:
    """The finished trial with the best `metric` (None when none has it)."""
    scored = [r for r in rows if r["status"] == "FINISHED" and r.get(metric) is not None]
    if not scored:
        return None
    return (min if mode == "min" else max)(scored, key=lambda r: r[metric]) | {"metric": metric}
