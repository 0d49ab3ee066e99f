"""platform/runner.tune_config: what every sweep's Tuner is built with."""

from __future__ import annotations

from pathlib import Path

import pytest

from platform import runner, spaces


@pytest.mark.parametrize(("name", "scheduled"), [("qlora_rank", False), ("qlora_lr_rank", True)])
def test_trials_reuse_function_actors_unless_a_scheduler_stops_them(name: str, scheduled: bool, tmp_path: Path) -> None:
    """Reusing a finished trial's function actor saves its start and imports on every later trial; a trial ASHA
    stops must not hand its actor on while its Train run is still going (the ASHA fault test failed that way)."""
    sweep = spaces.resolve(spaces.find(name), "local", {})
    assert (sweep.scheduler.type != "none") == scheduled
    config = runner.tune_config(sweep, f"sqlite:///{tmp_path / 'optuna.db'}", name)
    assert config.reuse_actors is not scheduled
    assert config.num_samples == sweep.num_samples and config.max_concurrent_trials == sweep.max_concurrent_trials
    assert (config.scheduler is not None) == scheduled


def test_a_private_ray_runs_train_without_the_preemption_watcher_and_a_cluster_keeps_it() -> None:
    """Ray Train starts a preemption-watcher actor per Train run, about 1 s of every trial on 2 cores; a private
    Ray's one node cannot be drained. The variable must be the one Ray Train reads."""
    from ray.train.v2._internal.constants import ENABLE_PREEMPTION_WATCHER_ENV_VAR

    from tests.conftest import ROOT
    from trainables.blocks.launch import runtime_env

    assert runtime_env(str(ROOT), private=True)["env_vars"][ENABLE_PREEMPTION_WATCHER_ENV_VAR] == "0"
    assert ENABLE_PREEMPTION_WATCHER_ENV_VAR not in runtime_env(str(ROOT))["env_vars"]
