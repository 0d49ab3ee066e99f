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


def _repeats(sampler: optuna.samplers.BaseSampler, n_trials: int) -> int:
    """Trials that repeat an earlier trial's configuration, on a 36-configuration space like qlora_pareto's."""
    space = {"lora.r": optuna.distributions.CategoricalDistribution([1, 4, 16]),
             "base": optuna.distributions.CategoricalDistribution(["nf4", "int8", "fp4", "lora16"]),
             "placement": optuna.distributions.CategoricalDistribution(["qv", "all_linear", "decoder_only"])}
    study = optuna.create_study(directions=["minimize", "minimize"], sampler=sampler)
    for _ in range(n_trials):
        trial = study.ask(fixed_distributions=space)
        p = trial.params
        study.tell(trial, [0.01 * p["lora.r"] + 0.1 * len(p["base"]) + 0.05 * len(p["placement"]),
                           len(p["base"]) - p["lora.r"]])
    configs = [tuple(sorted(t.params.items())) for t in study.trials]
    return len(configs) - len(set(configs))


def test_nsga2_spends_no_trial_on_a_configuration_it_has_tried() -> None:
    """Optuna's NSGA-II, population 4, repeats configurations of a small categorical space (alike parents give
    their child); the sweep's sampler draws again instead, so 12 trials are 12 configurations."""
    from platform.optuna_samplers import NSGAIISampler

    for seed in range(3):
        assert _repeats(optuna.samplers.NSGAIISampler(population_size=4, seed=seed), 12) > 0  # the problem is real
        assert _repeats(NSGAIISampler(population_size=4, seed=seed), 12) == 0
    # A space searched through still gets its trials, repeats then (40 trials, 36 configurations): no endless redraw.
    assert _repeats(NSGAIISampler(population_size=4, seed=0), 40) >= 4
