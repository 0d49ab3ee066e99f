"""Optuna's samplers as a sweep's searcher holds them.

Tune pickles the searcher with the Tuner when a sweep starts, and again with every experiment checkpoint (what
`--resume` restores). Optuna 5.1's genetic samplers hold a `threading.Lock`, which cannot be pickled, so a sweep
with the NSGA-II searcher (qlora_pareto) stopped in `tune.Tuner(...)` with "cannot pickle '_thread.lock' object".

NSGA-II also repeats itself on the small categorical spaces sweeps search: two like parents give their child, and
a child of the elite is often an elite trial again. On CPU a repeated trial costs as much as a new one and tells
little (the one run of `qlora_pareto`'s local preset spent 1 of its 8 trials on a repeat), so a child that
repeats a trial of the study is drawn again, then replaced by a random configuration, a few times each.
"""

from __future__ import annotations

import threading
from typing import Any

import optuna
from optuna.distributions import BaseDistribution
from optuna.trial import FrozenTrial

REDRAWS = 10
"""How many more children NSGA-II draws for a trial that repeats, then how many random configurations, before it
takes a repeat (a space nearly searched through)."""


class NSGAIISampler(optuna.samplers.NSGAIISampler):
    """Optuna's NSGA-II sampler, picklable: the lock is left out when pickled and a new one made when restored.

    The class keeps Optuna's name on purpose: Optuna keys the generation records it writes into the study by the
    sampler's class name (`NSGAIISampler:generation`), so a study this one wrote reads the same with Optuna's own.
    """

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.pop("_thread_lock", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._thread_lock = threading.Lock()

    def sample_relative(self, study: optuna.Study, trial: FrozenTrial,
                        search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        """NSGA-II's child, drawn again while it repeats another trial of the study. Parameters NSGA-II leaves to
        chance (all of them in the first generation, a mutated one later) are drawn here, as its random sampler
        would draw them afterwards, so that the whole configuration can be compared."""
        if not search_space:  # no trial has finished yet: Optuna draws every parameter on its own
            return {}
        names = sorted(search_space)
        seen = {tuple(t.params.get(n) for n in names) for t in study.get_trials(deepcopy=False)
                if t.number != trial.number}
        # NSGA-II's children first; when the parents are so alike that every child repeats, random configurations
        for attempt in range(1 + 2 * REDRAWS):
            child = super().sample_relative(study, trial, search_space) if attempt <= REDRAWS else {}
            child = {n: child[n] if n in child else self._random_sampler.sample_independent(study, trial, n, d)
                     for n, d in search_space.items()}
            if tuple(child[n] for n in names) not in seen:
                break
        return child
