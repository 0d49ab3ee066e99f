"""Statistics for sweep reports: error bars over seeds, paired significance tests, Pareto fronts.

Pure functions over plain Python data and numpy arrays: nothing here talks to MLflow or Ray, so the
report reads runs back (see `platform.report_data.trial_rows`) and hands the rows to these functions.

Trial rows follow the report's shape: a ``status`` (MLflow's ``FINISHED``, or Optuna's ``COMPLETE``),
metrics as top-level keys (``wer``, ``peak_vram_mb``, ...), the sampled parameters under ``searched``,
and optionally ``early_stopped: True`` for trials a scheduler (ASHA) cut short.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
from scipy import stats as _sps

if TYPE_CHECKING:
    import optuna

COMPLETED = frozenset({"FINISHED", "COMPLETE"})
MODES = ("min", "max")


# ----------------------------------------------------------------------------------------------
# Trial bookkeeping shared by the functions below


def is_completed(row: Mapping[str, Any]) -> bool:
    """True for a trial that ran to the end: status FINISHED (MLflow) or COMPLETE (Optuna), not early-stopped.

    Early-stopped trials report metrics of a partly trained model (and less time and memory spent), so they
    are no fair comparison with trials that ran to the end.
    """
    status = row.get("status")
    status = getattr(status, "name", status)  # accept optuna.trial.TrialState members too
    return str(status).upper() in COMPLETED and not row.get("early_stopped", False)


def _number(value: Any) -> float | None:
    """The value as a finite float, or None when it is missing, NaN, infinite or not a number."""
    if value is None or isinstance(value, bool):
        return None
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


# ----------------------------------------------------------------------------------------------
# Error bars over seeds


def mean_ci(values: Sequence[float | None], confidence: float = 0.95) -> tuple[float, float, float]:
    """Mean and two-sided Student-t confidence interval: ``(mean, low, high)``.

    Meant for a handful of seeds of one configuration, where a normal interval would be too narrow.
    None and NaN values (a trial that did not report the metric) are dropped first.

    With a single value the mean is returned with **NaN bounds**, not a zero-width interval: one seed
    says nothing about the spread, and a zero-width bar would claim certainty. With no values all three
    are NaN. Identical values give a zero-width interval (their sample deviation is zero).
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"mean_ci: confidence must be in (0, 1), got {confidence}")
    xs = np.array([x for x in (_number(v) for v in values) if x is not None], dtype=float)
    n = xs.size
    if n == 0:
        return math.nan, math.nan, math.nan
    if n == 1:
        return float(xs[0]), math.nan, math.nan
    if (xs == xs[0]).all():  # exact: summing 0.2 three times would leave a 1e-17 spread and a sliver of interval
        return float(xs[0]), float(xs[0]), float(xs[0])
    mean = float(xs.mean())
    sem = float(xs.std(ddof=1)) / math.sqrt(n)
    half = float(_sps.t.ppf(0.5 + confidence / 2.0, df=n - 1)) * sem
    return mean, mean - half, mean + half


# ----------------------------------------------------------------------------------------------
# Paired comparison of two systems on the same utterances


class Aligned(NamedTuple):
    """Per-utterance counts of two systems on the same utterances, in the same order."""

    ids: list[Any]
    errors_a: np.ndarray
    errors_b: np.ndarray
    ref_words: np.ndarray


def _index(rows: Sequence[Mapping[str, Any]], side: str) -> dict[Any, Mapping[str, Any]]:
    by_id: dict[Any, Mapping[str, Any]] = {}
    for row in rows:
        if "id" not in row:
            raise ValueError(f"align: a row of system {side} has no 'id'")
        if row["id"] in by_id:
            raise ValueError(f"align: utterance id {row['id']!r} occurs twice in system {side}")
        by_id[row["id"]] = row
    return by_id


def align(rows_a: Sequence[Mapping[str, Any]], rows_b: Sequence[Mapping[str, Any]]) -> Aligned:
    """Pair two systems' ``hypotheses.jsonl`` rows by utterance id (in A's order).

    Raises a one-line ValueError if the id sets differ, an id repeats, or an utterance's ``ref_words``
    differ between the systems (then the references or their normalisation differ, and the comparison
    would not be paired on the same test set).
    """
    a, b = _index(rows_a, "A"), _index(rows_b, "B")
    if a.keys() != b.keys():
        only_a = sorted(str(k) for k in a.keys() - b.keys())
        only_b = sorted(str(k) for k in b.keys() - a.keys())
        raise ValueError(f"align: utterance ids differ: {len(only_a)} only in A (e.g. {only_a[:3]}), "
                         f"{len(only_b)} only in B (e.g. {only_b[:3]})")
    ids = list(a)
    ref_a = np.array([a[i]["ref_words"] for i in ids], dtype=float)
    ref_b = np.array([b[i]["ref_words"] for i in ids], dtype=float)
    if not np.array_equal(ref_a, ref_b):
        bad = ids[int(np.flatnonzero(ref_a != ref_b)[0])]
        raise ValueError(f"align: utterance {bad!r} has {a[bad]['ref_words']} reference words in A "
                         f"but {b[bad]['ref_words']} in B")
    return Aligned(ids, np.array([a[i]["errors"] for i in ids], dtype=float),
                   np.array([b[i]["errors"] for i in ids], dtype=float), ref_a)


class EffectSize(NamedTuple):
    """Corpus WERs of both systems, their difference (B - A) and the relative change (B - A) / A."""

    wer_a: float
    wer_b: float
    delta: float
    relative: float  # NaN when system A has a WER of zero


@dataclass(frozen=True)
class BootstrapResult:
    """Result of `paired_bootstrap`. ``delta`` and the interval are in WER units (fractions): B minus A.

    ``se`` is the standard deviation of the bootstrap deltas (the delta's standard error), from which
    `minimum_detectable_effect` says how large a difference this test set could have detected.
    """

    delta: float
    ci_low: float
    ci_high: float
    p_value: float
    wer_a: float
    wer_b: float
    relative: float
    n_utterances: int
    n_boot: int
    confidence: float
    se: float = math.nan


def _check_counts(errors_a: Any, errors_b: Any, ref_words: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    ea, eb, r = (np.asarray(x, dtype=float) for x in (errors_a, errors_b, ref_words))
    if not (ea.ndim == eb.ndim == r.ndim == 1) or not (ea.size == eb.size == r.size):
        raise ValueError(f"expected three 1-D arrays of equal length, got shapes {ea.shape}, {eb.shape}, {r.shape}")
    if ea.size == 0:
        raise ValueError("no utterances to compare")
    if (ea < 0).any() or (eb < 0).any() or (r < 0).any() or not np.isfinite(np.concatenate([ea, eb, r])).all():
        raise ValueError("error and reference-word counts must be finite and non-negative")
    if r.sum() <= 0:
        raise ValueError("the references have no words: WER is undefined")
    return ea, eb, r


def effect_size(errors_a: Sequence[float], errors_b: Sequence[float], ref_words: Sequence[float]) -> EffectSize:
    """Corpus WER of each system (sum of errors / sum of reference words), and B's change over A."""
    ea, eb, r = _check_counts(errors_a, errors_b, ref_words)
    words = r.sum()
    wer_a, wer_b = ea.sum() / words, eb.sum() / words
    relative = (wer_b - wer_a) / wer_a if wer_a > 0 else math.nan
    return EffectSize(float(wer_a), float(wer_b), float(wer_b - wer_a), float(relative))


def paired_bootstrap(errors_a: Sequence[float], errors_b: Sequence[float], ref_words: Sequence[float],
                     n_boot: int = 10000, seed: int = 0, confidence: float = 0.95) -> BootstrapResult:
    """Paired bootstrap over utterances of the corpus-WER difference, system B minus system A.

    Each resample draws utterance indices with replacement and recomputes both corpus WERs on the same
    draw, so per-utterance difficulty cancels (Koehn 2004, "Statistical significance tests for machine
    translation evaluation"; Bisani & Ney 2004, "Bootstrap estimates for confidence intervals in ASR
    performance evaluation"). Because corpus WER is a ratio of sums, utterances are resampled whole
    rather than averaging per-utterance WERs. The arrays must be aligned by utterance (see `align`).

    - Interval: the percentile interval of the bootstrap deltas at ``confidence``.
    - p-value (two-sided, H0: no difference): the shifted-null bootstrap test (Efron & Tibshirani 1993,
      "An Introduction to the Bootstrap", sec. 16.4): the bootstrap deltas are centred on zero to
      mimic the null distribution, and ``p = (1 + #{|delta* - delta| >= |delta|}) / (n_boot + 1)``.
      The +1 terms (Davison & Hinkley 1997) keep p above zero: the smallest reportable p is
      ``1 / (n_boot + 1)``. Identical systems give p = 1.

    Resamples are drawn in blocks of about four million indices, so memory stays bounded for large
    test sets while 10,000 resamples of a few hundred utterances take a few tens of milliseconds.
    """
    if n_boot < 1:
        raise ValueError(f"paired_bootstrap: n_boot must be positive, got {n_boot}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"paired_bootstrap: confidence must be in (0, 1), got {confidence}")
    ea, eb, r = _check_counts(errors_a, errors_b, ref_words)
    effect = effect_size(ea, eb, r)
    n = ea.size
    diff = eb - ea  # both systems share the reference words, so only the error difference is resampled
    rng = np.random.default_rng(seed)
    deltas = np.empty(n_boot)
    block = max(1, (1 << 22) // n)
    for start in range(0, n_boot, block):
        idx = rng.integers(0, n, size=(min(block, n_boot - start), n))
        with np.errstate(invalid="ignore", divide="ignore"):  # a draw of only empty references: NaN
            deltas[start:start + idx.shape[0]] = diff[idx].sum(axis=1) / r[idx].sum(axis=1)
    deltas = deltas[np.isfinite(deltas)]
    alpha = 1.0 - confidence
    low, high = np.quantile(deltas, [alpha / 2.0, 1.0 - alpha / 2.0])
    # Round-off in the sums must not count as "as extreme as" a true zero difference, or the reverse.
    tol = 1e-12 * max(1.0, abs(effect.delta))
    extreme = np.count_nonzero(np.abs(deltas - effect.delta) >= abs(effect.delta) - tol)
    p = (1 + extreme) / (deltas.size + 1)
    return BootstrapResult(delta=effect.delta, ci_low=float(low), ci_high=float(high), p_value=float(min(p, 1.0)),
                           wer_a=effect.wer_a, wer_b=effect.wer_b, relative=effect.relative, n_utterances=n,
                           n_boot=n_boot, confidence=confidence,
                           se=float(deltas.std(ddof=1)) if deltas.size > 1 else math.nan)


# ----------------------------------------------------------------------------------------------
# Hierarchical bootstrap: seeds, then utterances

MIN_SEEDS = 3
"""Fewest seeds a level needs before its interval also resamples seeds. With 2 seeds a bootstrap over
seeds can only ever pick those two values, so its spread says little; such a level gets an interval over
utterances only, and its seed spread (min–max) is reported beside it."""


@dataclass(frozen=True)
class LevelInterval:
    """Error rate of one configuration over its seeds, with a hierarchical-bootstrap interval.

    ``mean`` is the mean over seeds of each seed's corpus error rate; ``low``/``high`` the percentile
    interval (never below 0, the metric's floor); ``se`` the bootstrap standard error. ``over_seeds`` is
    False when the level had fewer than `MIN_SEEDS` seeds: then the interval is over utterances only and
    the seed-to-seed variation is in ``seed_min``..``seed_max`` instead.
    """

    mean: float
    low: float
    high: float
    se: float
    seed_min: float
    seed_max: float
    n_seeds: int
    n_utterances: int
    over_seeds: bool
    confidence: float
    n_boot: int


@dataclass(frozen=True)
class DeltaInterval:
    """Difference B − A of two levels' seed-mean error rates, hierarchical bootstrap (see `hierarchical_delta`)."""

    delta: float
    low: float
    high: float
    se: float
    over_seeds: bool
    n_utterances: int
    confidence: float
    n_boot: int


def _seed_matrix(errors: Sequence[Sequence[float]], ref_words: Sequence[float], who: str) -> tuple[np.ndarray, np.ndarray]:
    """Errors as a (seeds × utterances) matrix and the reference words, checked like `_check_counts`."""
    e = np.asarray(errors, dtype=float)
    if e.ndim != 2 or e.shape[0] == 0:
        raise ValueError(f"{who}: expected errors as a non-empty (seeds × utterances) table, got shape {e.shape}")
    for row in e:
        _check_counts(row, row, ref_words)
    return e, np.asarray(ref_words, dtype=float)


def _utterance_weights(n_utt: int, n_boot: int, rng: np.random.Generator) -> Iterator[np.ndarray]:
    """Blocks of bootstrap utterance counts (resamples × utterances): how often each utterance is drawn."""
    block = max(1, (1 << 21) // n_utt)
    for start in range(0, n_boot, block):
        yield rng.multinomial(n_utt, np.full(n_utt, 1.0 / n_utt), size=min(block, n_boot - start)).astype(float)


def _seed_means(rates: np.ndarray, resample: bool, rng: np.random.Generator) -> np.ndarray:
    """Mean over seeds of each resample's per-seed rates (resamples × seeds), seeds drawn with replacement if asked."""
    if resample:
        rates = np.take_along_axis(rates, rng.integers(0, rates.shape[1], size=rates.shape), axis=1)
    return rates.mean(axis=1)


def _percentile(values: np.ndarray, confidence: float, floor: float | None) -> tuple[float, float]:
    alpha = 1.0 - confidence
    low, high = (float(x) for x in np.quantile(values, [alpha / 2.0, 1.0 - alpha / 2.0]))
    if floor is not None:
        low, high = max(low, floor), max(high, floor)
    return low, high


def hierarchical_bootstrap(errors: Sequence[Sequence[float]], ref_words: Sequence[float], n_boot: int = 2000,
                           seed: int = 0, confidence: float = 0.95, min_seeds: int = MIN_SEEDS) -> LevelInterval:
    """Interval of a configuration's error rate that counts both seed-to-seed and test-set variation.

    ``errors[k][u]``: errors of seed k on utterance u (word errors for WER, character errors for CER);
    ``ref_words[u]``: the utterance's reference length, the same for every seed (they decode one test set).
    Each resample draws seeds with replacement, then utterances with replacement, and takes the mean over the
    drawn seeds of their corpus error rates. Utterances are drawn once per resample and shared by the drawn
    seeds: every seed decoded the same utterances, so an utterance's difficulty is common to all of them and
    drawing it independently per seed would average it away and make the interval too narrow.

    With fewer than ``min_seeds`` seeds only utterances are resampled (the seeds are kept as they are) and
    the result says so (``over_seeds`` False); ``seed_min``/``seed_max`` give the seeds' spread either way.
    A percentile interval of a non-negative statistic cannot fall below 0; it is clipped there all the same.
    """
    if n_boot < 2:
        raise ValueError(f"hierarchical_bootstrap: n_boot must be at least 2, got {n_boot}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"hierarchical_bootstrap: confidence must be in (0, 1), got {confidence}")
    e, w = _seed_matrix(errors, ref_words, "hierarchical_bootstrap")
    per_seed = e.sum(axis=1) / w.sum()
    over_seeds = e.shape[0] >= min_seeds
    rng = np.random.default_rng(seed)
    boots = []
    for counts in _utterance_weights(w.size, n_boot, rng):
        with np.errstate(invalid="ignore", divide="ignore"):  # a draw of only empty references: NaN, dropped
            rates = (counts @ e.T) / (counts @ w)[:, None]
        boots.append(_seed_means(rates, over_seeds, rng))
    means = np.concatenate(boots)
    means = means[np.isfinite(means)]
    low, high = _percentile(means, confidence, floor=0.0)
    return LevelInterval(mean=float(per_seed.mean()), low=low, high=high, se=float(means.std(ddof=1)),
                         seed_min=float(per_seed.min()), seed_max=float(per_seed.max()), n_seeds=int(e.shape[0]),
                         n_utterances=int(w.size), over_seeds=over_seeds, confidence=confidence, n_boot=n_boot)


def hierarchical_delta(errors_a: Sequence[Sequence[float]], errors_b: Sequence[Sequence[float]],
                       ref_words: Sequence[float], n_boot: int = 2000, seed: int = 0, confidence: float = 0.95,
                       min_seeds: int = MIN_SEEDS) -> DeltaInterval:
    """Difference B − A of two levels' seed-mean error rates on the same utterances, with its bootstrap spread.

    Utterances are drawn once per resample for both levels (paired, as in `paired_bootstrap`); each level's
    seeds are drawn with replacement from its own, when both have at least ``min_seeds`` (otherwise the
    interval is over utterances only, ``over_seeds`` False). ``se`` feeds `minimum_detectable_effect`.
    """
    if n_boot < 2:
        raise ValueError(f"hierarchical_delta: n_boot must be at least 2, got {n_boot}")
    n_a, n_b = np.shape(errors_a)[-1], np.shape(errors_b)[-1]
    if n_a != n_b:
        raise ValueError(f"hierarchical_delta: {n_a} utterances in A but {n_b} in B")
    a, w = _seed_matrix(errors_a, ref_words, "hierarchical_delta")
    b, _ = _seed_matrix(errors_b, ref_words, "hierarchical_delta")
    over_seeds = min(a.shape[0], b.shape[0]) >= min_seeds
    rng = np.random.default_rng(seed)
    boots = []
    for counts in _utterance_weights(w.size, n_boot, rng):
        with np.errstate(invalid="ignore", divide="ignore"):
            words = (counts @ w)[:, None]
            diff = _seed_means((counts @ b.T) / words, over_seeds, rng) - _seed_means((counts @ a.T) / words, over_seeds, rng)
        boots.append(diff)
    deltas = np.concatenate(boots)
    deltas = deltas[np.isfinite(deltas)]
    low, high = _percentile(deltas, confidence, floor=None)
    delta = float(b.sum(axis=1).mean() / w.sum() - a.sum(axis=1).mean() / w.sum())
    return DeltaInterval(delta=delta, low=low, high=high, se=float(deltas.std(ddof=1)), over_seeds=over_seeds,
                         n_utterances=int(w.size), confidence=confidence, n_boot=n_boot)


def minimum_detectable_effect(se: float, alpha: float = 0.05, power: float = 0.8) -> float:
    """Smallest true difference a two-sided test at level ``alpha`` detects with probability ``power``.

    For an estimate with standard error ``se`` (e.g. a bootstrap delta's), approximately normal:
    MDE = (z_{1−α/2} + z_{power}) · se; 2.80 · se at α = 0.05 and 80% power. A difference that is not
    significant then reads "no effect larger than MDE" (at that power), rather than "no effect".
    """
    if not (0.0 < alpha < 1.0 and 0.0 < power < 1.0):
        raise ValueError(f"minimum_detectable_effect: alpha and power must be in (0, 1), got {alpha}, {power}")
    if not math.isfinite(se) or se < 0:
        return math.nan
    return float((_sps.norm.ppf(1.0 - alpha / 2.0) + _sps.norm.ppf(power)) * se)


# ----------------------------------------------------------------------------------------------
# Pareto fronts over completed trials


def _objective_matrix(points: Sequence[Mapping[str, Any]], objectives: Sequence[str],
                      modes: Sequence[str]) -> tuple[list[Mapping[str, Any]], np.ndarray]:
    """Completed points having every objective, and their values as a matrix to minimise (max negated)."""
    if not objectives:
        raise ValueError("pareto_front: no objectives given")
    if len(objectives) != len(modes):
        raise ValueError(f"pareto_front: {len(objectives)} objectives but {len(modes)} modes")
    bad = [m for m in modes if m not in MODES]
    if bad:
        raise ValueError(f"pareto_front: unknown mode {bad[0]!r} (use 'min' or 'max')")
    kept, values = [], []
    for point in points:
        if not is_completed(point):
            continue
        xs = [_number(point.get(o)) for o in objectives]
        if any(x is None for x in xs):
            continue
        kept.append(point)
        values.append(xs)
    sign = np.array([1.0 if m == "min" else -1.0 for m in modes])
    return kept, np.array(values, dtype=float).reshape(len(kept), len(objectives)) * sign


def pareto_front(points: Sequence[Mapping[str, Any]], objectives: Sequence[str],
                 modes: Sequence[str]) -> list[Mapping[str, Any]]:
    """The non-dominated completed trials, sorted by the first objective (ascending value).

    A point dominates another when it is at least as good on every objective and strictly better on
    one. Points that are not completed (see `is_completed`: failed, killed, running, early-stopped)
    or lack a finite value for any objective are left out before dominance is decided, so a failed
    or partly trained trial never hides a real one. Equal points do not dominate each other: all are
    kept. Ties on the first objective are ordered by the following objectives. The input dicts are
    returned themselves, not copies.
    """
    kept, v = _objective_matrix(points, objectives, modes)
    if not kept:
        return []
    # dominated[j]: some i is <= j everywhere and < j somewhere. O(n^2 k) memory-light enough for sweeps.
    le = (v[:, None, :] <= v[None, :, :]).all(axis=2)
    lt = (v[:, None, :] < v[None, :, :]).any(axis=2)
    dominated = (le & lt).any(axis=0)
    front = [(kept[j], [_number(kept[j].get(o)) for o in objectives]) for j in np.flatnonzero(~dominated)]
    front.sort(key=lambda pv: pv[1])
    return [p for p, _ in front]


# ----------------------------------------------------------------------------------------------
# Ablation levels


def _level_of(row: Mapping[str, Any], factor: str) -> tuple[bool, Any]:
    searched = row.get("searched")
    if isinstance(searched, Mapping) and factor in searched:
        return True, searched[factor]
    if factor in row:
        return True, row[factor]
    return False, None


def level_summary(rows: Sequence[Mapping[str, Any]], factor: str, metrics: Sequence[str],
                  confidence: float = 0.95) -> list[dict[str, Any]]:
    """Completed trials grouped by the level (value) of one factor, with a `mean_ci` per metric.

    The level is read from ``row["searched"][factor]``, else from ``row[factor]``; rows without it are
    skipped, as are trials that are not completed (see `is_completed`). One dict per level::

        {"level": 16, "n": 3, "wer_mean": .., "wer_low": .., "wer_high": .., "wer_n": 3, ...}

    ``n`` counts the level's completed trials and ``<metric>_n`` those that reported the metric
    (bounds are NaN with one value; see `mean_ci`). Levels are sorted numerically when all are numbers,
    else by their text. Unhashable levels (lists, e.g. adapter target modules) are grouped by JSON value.
    """
    groups: dict[str, tuple[Any, list[Mapping[str, Any]]]] = {}
    for row in rows:
        found, level = _level_of(row, factor)
        if not found or not is_completed(row):
            continue
        key = json.dumps(level, sort_keys=True, default=str)
        groups.setdefault(key, (level, []))[1].append(row)
    levels = [level for level, _ in groups.values()]
    numeric = all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in levels)
    order = sorted(groups.values(), key=(lambda g: g[0]) if numeric else (lambda g: str(g[0])))
    out = []
    for level, members in order:
        entry: dict[str, Any] = {"level": level, "n": len(members)}
        for metric in metrics:
            values = [x for x in (_number(m.get(metric)) for m in members) if x is not None]
            mean, low, high = mean_ci(values, confidence)
            entry.update({f"{metric}_mean": mean, f"{metric}_low": low, f"{metric}_high": high,
                          f"{metric}_n": len(values)})
        out.append(entry)
    return out


# ----------------------------------------------------------------------------------------------
# Parameter importances from an Optuna study


def param_importances(study: optuna.Study, target: Callable[[optuna.trial.FrozenTrial], float] | None = None,
                      ) -> dict[str, float]:
    """Normalised importance of each searched parameter (summing to 1), or {} with < 2 completed trials.

    Uses Optuna 5's default evaluator, PED-ANOVA, which needs nothing beyond numpy/scipy. If it fails
    (it can on degenerate studies), falls back to mean decrease impurity, which needs scikit-learn and
    is only tried when that imports. For a multi-objective study without ``target``, importances are
    taken for the first objective (negated when it is maximised). A custom ``target`` must be one where
    lower is better.
    """
    import optuna

    completed = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if len(completed) < 2:
        return {}
    own_target = target is None and len(study.directions) > 1
    if own_target:
        # PED-ANOVA ranks parameters by how they reach *low* targets, so a maximised objective is negated.
        sign = -1.0 if study.directions[0] == optuna.study.StudyDirection.MAXIMIZE else 1.0

        def target(t: optuna.trial.FrozenTrial) -> float:
            return sign * float(t.values[0])

    evaluators: list[Any] = [optuna.importance.PedAnovaImportanceEvaluator()]
    try:
        import sklearn  # noqa: F401

        evaluators.append(optuna.importance.MeanDecreaseImpurityImportanceEvaluator(seed=0))
    except ImportError:
        pass
    error: Exception | None = None
    for evaluator in evaluators:
        try:
            with warnings.catch_warnings():
                if own_target:  # the direction is already handled above
                    warnings.filterwarnings("ignore", message="PedAnovaImportanceEvaluator computes", category=UserWarning)
                result = optuna.importance.get_param_importances(study, evaluator=evaluator, target=target)
        except Exception as exc:  # noqa: BLE001 - any evaluator failure means: try the next one
            error = exc
            continue
        values = {k: float(v) for k, v in result.items()}
        if all(math.isfinite(v) for v in values.values()):
            return values
    raise RuntimeError(f"param_importances: no importance evaluator worked ({error})")


# ----------------------------------------------------------------------------------------------
# Plot


def plot_pareto(points: Sequence[Mapping[str, Any]], front: Sequence[Mapping[str, Any]], x: str, y: str,
                path: str | Path, modes: Sequence[str] = ("min", "min"), title: str | None = None,
                label_key: str = "trial") -> Path:
    """Scatter of all completed trials on (x, y), with the front highlighted and joined as a step line.

    The step follows the attainment boundary, which depends on the direction of x (``modes[0]``): each
    front point holds its y value toward worse x. Front points are labelled with ``point[label_key]``
    when present. Uses matplotlib's object API (Agg canvas), so it changes no global backend state.
    """
    from matplotlib.figure import Figure

    def xy(ps: Sequence[Mapping[str, Any]]) -> tuple[list[float], list[float]]:
        pairs = [(_number(p.get(x)), _number(p.get(y))) for p in ps if is_completed(p)]
        pairs = sorted((a, b) for a, b in pairs if a is not None and b is not None)
        return [a for a, _ in pairs], [b for _, b in pairs]

    fig = Figure(figsize=(6.4, 4.4))
    ax = fig.add_subplot()
    xs, ys = xy(points)
    ax.scatter(xs, ys, s=28, color="0.6", alpha=0.8, label=f"completed trials ({len(xs)})", zorder=2)
    fx, fy = xy(front)
    if fx:
        ax.step(fx, fy, where="post" if modes[0] == "min" else "pre", color="tab:red", linewidth=1.5, zorder=3)
        ax.scatter(fx, fy, s=56, color="tab:red", edgecolor="black", linewidth=0.6,
                   label=f"Pareto front ({len(fx)})", zorder=4)
        for i, p in enumerate(front):
            px, py = _number(p.get(x)), _number(p.get(y))
            if label_key in p and px is not None and py is not None:
                # neighbours on the front alternate above and below, so two close points keep readable labels
                ax.annotate(str(p[label_key]), (px, py), textcoords="offset points",
                            xytext=(5, 5 if i % 2 == 0 else -11), fontsize=7)
    arrow = {"min": "lower is better", "max": "higher is better"}
    ax.set_xlabel(f"{x} ({arrow.get(modes[0], modes[0])})")
    ax.set_ylabel(f"{y} ({arrow.get(modes[1], modes[1])})")
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    return path
