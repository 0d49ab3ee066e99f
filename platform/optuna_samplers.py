"""Optuna's samplers as a sweep's searcher holds them.

Tune pickles the searcher with the Tuner when a sweep starts, and again with every experiment checkpoint (what
`--resume` restores). Optuna 5.1's genetic samplers hold a `threading.Lock`, which cannot be pickled, so a sweep
with the NSGA-II searcher (qlora_pareto) stopped in `tune.Tuner(...)` with "cannot pickle '_thread.lock' object".
"""

from __future__ import annotations

import threading
from typing import Any

import optuna


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
