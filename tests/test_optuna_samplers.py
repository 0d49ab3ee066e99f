"""platform/optuna_samplers.py: the NSGA-II searcher survives the pickling Tune does to every searcher."""

from __future__ import annotations

from pathlib import Path

import optuna
from ray import cloudpickle

from platform import runner, spaces


def test_qlora_paretos_searcher_pickles_and_samples_after_it_is_restored(tmp_path: Path) -> None:
    """Tune pickles the searcher when the Tuner is built and at each experiment checkpoint; with Optuna's own
    NSGA-II sampler (a threading.Lock inside) qlora_pareto stopped there before its first trial."""
    sweep = spaces.resolve(spaces.find("qlora_pareto"), "local", {})
    searcher = runner.make_searcher(sweep, f"sqlite:///{tmp_path / 'optuna.db'}", "pareto")
    restored = cloudpickle.loads(cloudpickle.dumps(searcher))
    sampler = restored._sampler
    assert isinstance(sampler, optuna.samplers.NSGAIISampler) and sampler.population_size == 4
    # The restored sampler works: two generations of a two-objective study.
    study = optuna.create_study(directions=["minimize", "minimize"], sampler=sampler)
    study.optimize(lambda t: (t.suggest_float("x", 0, 1), 1 - t.suggest_float("y", 0, 1)), n_trials=8)
    assert len(study.trials) == 8 and all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)


def test_the_generation_records_keep_optunas_key() -> None:
    """Optuna names the generation records after the sampler's class: a study this sampler wrote reads the same with
    Optuna's own sampler (optuna-dashboard, a study resumed elsewhere)."""
    from platform.optuna_samplers import NSGAIISampler

    assert NSGAIISampler._get_generation_key() == optuna.samplers.NSGAIISampler._get_generation_key()
