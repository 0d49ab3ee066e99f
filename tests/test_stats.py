"""Sweep-report statistics: t intervals, the paired bootstrap, Pareto fronts, ablation levels, importances."""

from __future__ import annotations

import itertools
import math
import time
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as sps

from platform import stats


def _rows(errors: list[int] | np.ndarray, ref_words: list[int] | np.ndarray, ids: list[str] | None = None) -> list[dict]:
    ids = ids or [f"utt{i:03d}" for i in range(len(errors))]
    return [{"id": i, "reference": "r", "hypothesis": "h", "errors": int(e), "ref_words": int(w)}
            for i, e, w in zip(ids, errors, ref_words, strict=True)]


# ------------------------------------------------------------------------------------------ mean_ci

def test_mean_ci_matches_scipy_t_interval() -> None:
    values = [0.21, 0.25, 0.19, 0.23, 0.30]
    mean, low, high = stats.mean_ci(values, confidence=0.9)
    ref_low, ref_high = sps.t.interval(0.9, df=len(values) - 1, loc=np.mean(values), scale=sps.sem(values))
    assert mean == pytest.approx(np.mean(values))
    assert (low, high) == pytest.approx((ref_low, ref_high), rel=1e-12)


def test_mean_ci_constant_single_and_empty() -> None:
    assert stats.mean_ci([0.2, 0.2, 0.2]) == pytest.approx((0.2, 0.2, 0.2), abs=0)
    mean, low, high = stats.mean_ci([0.3])
    assert mean == 0.3 and math.isnan(low) and math.isnan(high)
    assert all(math.isnan(x) for x in stats.mean_ci([]))
    assert stats.mean_ci([0.1, None, float("nan"), 0.3])[0] == pytest.approx(0.2)  # missing values dropped
    with pytest.raises(ValueError):
        stats.mean_ci([1.0, 2.0], confidence=1.5)


# ----------------------------------------------------------------------------------------- bootstrap

def test_bootstrap_detects_a_clear_difference_quickly() -> None:
    rng = np.random.default_rng(1)
    ref = rng.integers(5, 20, size=200)
    errors_a = rng.binomial(ref, 0.10)
    errors_b = rng.binomial(ref, 0.16)  # about 6 points of WER worse
    started = time.perf_counter()
    result = stats.paired_bootstrap(errors_a, errors_b, ref, n_boot=10000, seed=0)
    elapsed = time.perf_counter() - started
    assert elapsed < 0.5, f"10,000 resamples of 200 utterances took {elapsed:.2f}s"
    assert result.p_value < 0.05
    assert result.delta == pytest.approx(errors_b.sum() / ref.sum() - errors_a.sum() / ref.sum())
    assert 0 < result.ci_low < result.delta < result.ci_high
    assert result.relative == pytest.approx(result.delta / result.wer_a)
    # Swapping the systems mirrors the difference, and the test is two-sided.
    swapped = stats.paired_bootstrap(errors_b, errors_a, ref, n_boot=10000, seed=0)
    assert swapped.delta == pytest.approx(-result.delta)
    assert swapped.p_value < 0.05 and swapped.ci_high < 0


def test_bootstrap_identical_systems_is_not_significant() -> None:
    rng = np.random.default_rng(2)
    ref = rng.integers(5, 20, size=200)
    errors = rng.binomial(ref, 0.12)
    result = stats.paired_bootstrap(errors, errors, ref, n_boot=2000)
    assert result.delta == 0 and result.ci_low == 0 and result.ci_high == 0
    assert result.p_value > 0.2


def test_bootstrap_noise_only_difference_is_not_significant() -> None:
    # B differs from A only by zero-mean noise per utterance.
    rng = np.random.default_rng(3)
    ref = rng.integers(5, 20, size=200)
    errors_a = rng.binomial(ref, 0.12)
    errors_b = errors_a.copy()
    moved = rng.choice(200, size=40, replace=False)
    errors_b[moved[:20]] += 1
    errors_b[moved[20:]] = np.maximum(errors_b[moved[20:]] - 1, 0)
    result = stats.paired_bootstrap(errors_a, errors_b, ref, n_boot=5000)
    assert result.ci_low < 0 < result.ci_high
    assert result.p_value > 0.2


def test_bootstrap_is_reproducible_and_checks_inputs() -> None:
    ref, ea, eb = [10, 12, 8, 9], [1, 2, 0, 1], [2, 2, 1, 3]
    assert stats.paired_bootstrap(ea, eb, ref, n_boot=500, seed=7) == stats.paired_bootstrap(ea, eb, ref, n_boot=500,
                                                                                              seed=7)
    with pytest.raises(ValueError):
        stats.paired_bootstrap(ea, eb[:3], ref)
    with pytest.raises(ValueError):
        stats.paired_bootstrap([], [], [])
    with pytest.raises(ValueError):
        stats.paired_bootstrap([1], [-1], [3])


def test_effect_size() -> None:
    effect = stats.effect_size([1, 1], [2, 1], [10, 10])
    assert effect == pytest.approx(stats.EffectSize(0.1, 0.15, 0.05, 0.5))
    assert math.isnan(stats.effect_size([0], [1], [5]).relative)


def test_align_pairs_by_id_and_raises_on_mismatch() -> None:
    a = _rows([1, 2, 3], [5, 6, 7], ids=["x", "y", "z"])
    b = list(reversed(_rows([0, 4, 1], [5, 6, 7], ids=["x", "y", "z"])))
    aligned = stats.align(a, b)
    assert aligned.ids == ["x", "y", "z"]
    assert aligned.errors_a.tolist() == [1, 2, 3] and aligned.errors_b.tolist() == [0, 4, 1]
    assert aligned.ref_words.tolist() == [5, 6, 7]
    with pytest.raises(ValueError, match="ids differ") as info:
        stats.align(a, _rows([1, 2, 3], [5, 6, 7], ids=["x", "y", "w"]))
    assert "\n" not in str(info.value)
    with pytest.raises(ValueError, match="twice"):
        stats.align(a + a[:1], b)
    with pytest.raises(ValueError, match="reference words"):
        stats.align(a, _rows([1, 2, 3], [5, 6, 8], ids=["x", "y", "z"]))


# ----------------------------------------------------------------------------------------------- Pareto

def _dominates(p: dict, q: dict, objectives: list[str], modes: list[str]) -> bool:
    sign = {"min": 1, "max": -1}
    pv = [sign[m] * p[o] for o, m in zip(objectives, modes, strict=True)]
    qv = [sign[m] * q[o] for o, m in zip(objectives, modes, strict=True)]
    return all(a <= b for a, b in zip(pv, qv, strict=True)) and any(a < b for a, b in zip(pv, qv, strict=True))


def _check_front_by_brute_force(points: list[dict], front: list[dict], objectives: list[str], modes: list[str]) -> None:
    eligible = [p for p in points if stats.is_completed(p) and all(p.get(o) is not None for o in objectives)]
    for p in front:
        assert not any(_dominates(q, p, objectives, modes) for q in eligible)
    for p in eligible:
        if not any(p is f for f in front):
            assert any(_dominates(f, p, objectives, modes) for f in front)


def test_pareto_front_of_a_constructed_set() -> None:
    def pt(name: str, wer: float | None, vram: float | None, status: str = "FINISHED", **kw) -> dict:
        return {"trial": name, "status": status, "wer": wer, "peak_vram_mb": vram, **kw}

    points = [
        pt("a", 0.10, 900), pt("b", 0.12, 500), pt("c", 0.20, 300), pt("d", 0.15, 600),  # d: dominated by b
        pt("e", 0.12, 500),  # equal to b: both kept
        pt("f", 0.20, 400),  # dominated by c (same WER, more memory)
        pt("g", 0.25, 300),  # dominated by c (same memory, worse WER)
        pt("stopped", 0.01, 10, early_stopped=True), pt("failed", 0.01, 10, status="FAILED"),
        pt("killed", 0.01, 10, status="KILLED"), pt("no-vram", 0.05, None),
        pt("nan", float("nan"), 100), {"trial": "no-wer", "status": "FINISHED", "peak_vram_mb": 1},
        pt("optuna", 0.30, 200, status="COMPLETE"),
    ]
    objectives, modes = ["wer", "peak_vram_mb"], ["min", "min"]
    front = stats.pareto_front(points, objectives, modes)
    assert [p["trial"] for p in front] == ["a", "b", "e", "c", "optuna"]
    assert all(p is q for p, q in zip(front, [points[0], points[1], points[4], points[2], points[-1]], strict=True))
    _check_front_by_brute_force([p for p in points if p["trial"] != "nan"], front, objectives, modes)


def test_pareto_front_max_mode_and_random_sets() -> None:
    points = [{"status": "FINISHED", "acc": a, "speed": s} for a, s in [(0.9, 10), (0.8, 20), (0.7, 15), (0.9, 5)]]
    front = stats.pareto_front(points, ["acc", "speed"], ["max", "max"])
    assert [(p["acc"], p["speed"]) for p in front] == [(0.8, 20), (0.9, 10)]
    rng = np.random.default_rng(0)
    for trial, modes in zip(range(20), itertools.cycle([["min", "min"], ["min", "max"], ["max", "min", "max"]])):
        objectives = ["x", "y", "z"][: len(modes)]
        points = [{"status": str(rng.choice(["FINISHED", "FINISHED", "FAILED"])), "early_stopped": bool(rng.random() < .1),
                   **{o: float(rng.integers(0, 6)) for o in objectives}} for _ in range(40)]
        front = stats.pareto_front(points, objectives, modes)
        _check_front_by_brute_force(points, front, objectives, modes)
        first = [p[objectives[0]] for p in front]
        assert first == sorted(first), trial


def test_pareto_front_rejects_bad_arguments() -> None:
    assert stats.pareto_front([], ["wer"], ["min"]) == []
    with pytest.raises(ValueError):
        stats.pareto_front([], ["wer", "vram"], ["min"])
    with pytest.raises(ValueError):
        stats.pareto_front([], ["wer"], ["minimize"])


# ------------------------------------------------------------------------------------------ levels

def test_level_summary_groups_completed_trials_by_level() -> None:
    rows = [
        {"status": "FINISHED", "searched": {"rank": 16}, "wer": 0.20, "vram": 100},
        {"status": "FINISHED", "searched": {"rank": 16}, "wer": 0.22, "vram": 110},
        {"status": "FINISHED", "searched": {"rank": 16}, "wer": 0.24, "vram": None},
        {"status": "FINISHED", "searched": {"rank": 4}, "wer": 0.30, "vram": 80},
        {"status": "FAILED", "searched": {"rank": 4}, "wer": 0.01, "vram": 1},
        {"status": "FINISHED", "searched": {"rank": 4}, "wer": 0.01, "early_stopped": True},
        {"status": "FINISHED", "searched": {"alpha": 2}, "wer": 0.5},
        {"status": "FINISHED", "rank": 64, "wer": 0.18, "vram": 200},  # a flat row
    ]
    summary = stats.level_summary(rows, "rank", ["wer", "vram"])
    assert [s["level"] for s in summary] == [4, 16, 64]
    assert [s["n"] for s in summary] == [1, 3, 1]
    r16 = summary[1]
    expected = stats.mean_ci([0.20, 0.22, 0.24])
    assert (r16["wer_mean"], r16["wer_low"], r16["wer_high"]) == pytest.approx(expected)
    assert r16["wer_n"] == 3 and r16["vram_n"] == 2 and r16["vram_mean"] == pytest.approx(105)
    assert summary[0]["wer_mean"] == 0.30 and math.isnan(summary[0]["wer_low"])


def test_level_summary_with_list_levels() -> None:
    rows = [{"status": "FINISHED", "searched": {"targets": t}, "wer": w}
            for t, w in [(["q", "v"], 0.2), (["q", "v"], 0.3), (["q", "k", "v"], 0.1)]]
    summary = stats.level_summary(rows, "targets", ["wer"])
    assert {",".join(s["level"]): s["n"] for s in summary} == {"q,v": 2, "q,k,v": 1}


# ----------------------------------------------------------------------------------------- importances

def test_param_importances_on_a_tiny_study() -> None:
    optuna = pytest.importorskip("optuna")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(lambda t: 10 * t.suggest_float("x", -1, 1) ** 2 + 0.01 * t.suggest_int("rank", 1, 8), n_trials=10)
    importances = stats.param_importances(study)
    assert set(importances) == {"x", "rank"}
    assert sum(importances.values()) == pytest.approx(1.0)
    assert all(v >= 0 for v in importances.values())

    multi = optuna.create_study(directions=["maximize", "minimize"], sampler=optuna.samplers.RandomSampler(seed=0))
    multi.optimize(lambda t: (-t.suggest_float("x", -1, 1) ** 2, t.suggest_int("rank", 1, 8)), n_trials=10)
    assert set(stats.param_importances(multi)) == {"x", "rank"}  # first objective, negated as it is maximised

    tiny = optuna.create_study()
    tiny.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=1)
    assert stats.param_importances(tiny) == {}


# ----------------------------------------------------------------------------------------------- plot

def test_plot_pareto_writes_a_png(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    points = [{"trial": f"t{i}", "status": "FINISHED", "wer": float(w), "peak_vram_mb": float(v)}
              for i, (w, v) in enumerate(zip(rng.uniform(0.1, 0.4, 25), rng.uniform(200, 1200, 25), strict=True))]
    points.append({"trial": "failed", "status": "FAILED", "wer": 0.0, "peak_vram_mb": 0.0})
    front = stats.pareto_front(points, ["peak_vram_mb", "wer"], ["min", "min"])
    out = stats.plot_pareto(points, front, "peak_vram_mb", "wer", tmp_path / "pareto.png", title="WER vs memory")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 5000


# ------------------------------------------------------------------------------ hierarchical bootstrap

TRUE_WER = 0.15  # the population mean of `_draw_level`'s per-utterance error probabilities


def _draw_level(rng: np.random.Generator, seeds: int, utterances: int, seed_sd: float = 0.02) -> tuple[np.ndarray, np.ndarray]:
    """A level's errors (seeds × utterances): utterance difficulty shared by the seeds, plus a per-seed shift."""
    words = rng.integers(5, 16, size=utterances)
    difficulty = rng.uniform(0.05, 0.25, size=utterances)
    shift = rng.normal(0.0, seed_sd, size=seeds)
    return rng.binomial(words[None, :], np.clip(difficulty[None, :] + shift[:, None], 0.0, 1.0)), words


def test_hierarchical_interval_stays_within_the_range_of_wer() -> None:
    """A nearly perfect level: a Student t interval over its seeds dips below 0, the bootstrap's does not."""
    words = np.full(40, 10)
    errors = np.zeros((2, 40))
    errors[0, 0], errors[1, :6] = 1, 1  # WERs 0.0025 and 0.015
    assert stats.mean_ci(errors.sum(axis=1) / words.sum())[1] < 0
    for e in (errors, np.vstack([errors, np.zeros(40)]), np.zeros((3, 40))):
        r = stats.hierarchical_bootstrap(e, words, n_boot=500)
        assert 0.0 <= r.low <= r.mean <= r.high <= 1.0
    rng = np.random.default_rng(3)
    for _ in range(20):
        e, w = _draw_level(rng, 4, 30, seed_sd=0.1)
        r = stats.hierarchical_bootstrap(e, w, n_boot=300)
        assert 0.0 <= r.low <= r.high <= 1.0


def test_hierarchical_interval_covers_the_true_mean_at_about_the_nominal_rate() -> None:
    rng = np.random.default_rng(1)
    draws = 200
    covered = 0
    for i in range(draws):
        e, w = _draw_level(rng, 8, 120)
        r = stats.hierarchical_bootstrap(e, w, n_boot=400, seed=i)
        assert r.over_seeds
        covered += r.low <= TRUE_WER <= r.high
    assert 0.88 <= covered / draws <= 0.995, covered / draws


def test_hierarchical_interval_shrinks_with_more_seeds_and_utterances() -> None:
    def width(seeds: int, utterances: int) -> float:
        rng = np.random.default_rng(7)
        ws = []
        for i in range(8):
            e, w = _draw_level(rng, seeds, utterances)
            r = stats.hierarchical_bootstrap(e, w, n_boot=400, seed=i)
            ws.append(r.high - r.low)
        return float(np.mean(ws))

    assert width(3, 100) > width(6, 100) > width(12, 100)
    assert width(4, 50) > width(4, 200) > width(4, 800)


def test_few_seeds_give_an_utterance_interval_and_the_seed_spread() -> None:
    words = np.full(50, 10)
    rng = np.random.default_rng(0)
    errors = np.vstack([rng.binomial(10, 0.1, 50), rng.binomial(10, 0.3, 50)])
    r = stats.hierarchical_bootstrap(errors, words, n_boot=500)
    wers = errors.sum(axis=1) / words.sum()
    assert not r.over_seeds and r.n_seeds == 2 and r.n_utterances == 50
    assert (r.seed_min, r.seed_max) == pytest.approx((wers.min(), wers.max()))
    assert r.mean == pytest.approx(wers.mean())
    # Utterances only: the same as a bootstrap of the seed-averaged errors, narrower than the seeds' spread.
    assert r.high - r.low < r.seed_max - r.seed_min
    assert stats.hierarchical_bootstrap(np.vstack([errors, errors[:1]]), words, n_boot=200).over_seeds


def test_hierarchical_delta_includes_seed_variation_only_with_enough_seeds() -> None:
    rng = np.random.default_rng(5)
    a, w = _draw_level(rng, 6, 100, seed_sd=0.03)
    b = a.copy()
    b[:, :10] += 1  # B makes 10 more errors on every seed
    d = stats.hierarchical_delta(a, b, w, n_boot=1000)
    assert d.delta == pytest.approx(10 / w.sum()) and d.over_seeds
    assert d.low < d.delta < d.high
    narrow = stats.hierarchical_delta(a[:2], b[:2], w, n_boot=1000)
    assert not narrow.over_seeds and narrow.se < d.se
    with pytest.raises(ValueError, match="utterances"):
        stats.hierarchical_delta(a, b[:, :50], w[:50])


# ---------------------------------------------------------------------- minimum detectable effect

def test_minimum_detectable_effect_formula() -> None:
    assert stats.minimum_detectable_effect(0.01) == pytest.approx((1.959964 + 0.841621) * 0.01, rel=1e-5)
    assert stats.minimum_detectable_effect(0.01, alpha=0.01, power=0.9) == pytest.approx(
        (sps.norm.ppf(0.995) + sps.norm.ppf(0.9)) * 0.01)
    assert math.isnan(stats.minimum_detectable_effect(math.nan))


def test_minimum_detectable_effect_from_a_bootstrap_of_known_spread() -> None:
    """Per-utterance error differences of known standard deviation σ: the delta's SE is σ / (√n · words)."""
    n, words, sigma = 400, 10, 2.0
    diffs = np.tile([-2, 2], n // 2)  # standard deviation exactly 2 errors per utterance
    errors_a = np.full(n, 5)
    b = stats.paired_bootstrap(errors_a, errors_a + diffs, np.full(n, words), n_boot=4000)
    expected_se = sigma / math.sqrt(n) / words
    assert b.se == pytest.approx(expected_se, rel=0.08)
    assert stats.minimum_detectable_effect(b.se) == pytest.approx(2.8016 * expected_se, rel=0.08)
    d = stats.hierarchical_delta([errors_a], [errors_a + diffs], np.full(n, words), n_boot=4000)
    assert d.se == pytest.approx(expected_se, rel=0.08)
