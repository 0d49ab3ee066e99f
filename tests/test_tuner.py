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


def test_a_trial_the_study_holds_finished_is_not_told_again(tmp_path: Path) -> None:
    """A driver lost within Tune's 10 s between saves, just after a trial ended, leaves Tune's state with that trial
    unfinished: the resumed sweep runs it again and it reports its final result again. The resume of the
    driver-kill fault test ended with Optuna's UpdateFinishedTrialError this way."""
    import optuna

    sweep = spaces.resolve(spaces.find("qlora_rank"), "local", {})
    searcher = runner.make_searcher(sweep, f"sqlite:///{tmp_path / 'optuna.db'}", "rank")
    searcher.suggest("a")
    searcher.suggest("b")
    final = {"val_wer": 0.2, "wer": 0.25, "training_iteration": 1}
    searcher.on_trial_result("a", final)
    searcher.on_trial_complete("a", final)
    assert searcher.finished_in_study("a") and not searcher.finished_in_study("b")
    # The resumed sweep's searcher: restored from Tune's older state, where "a" was still running.
    resumed = runner.make_searcher(sweep, f"sqlite:///{tmp_path / 'optuna.db'}", "rank")
    resumed._ot_trials = dict(searcher._ot_trials)
    resumed.on_trial_result("a", {**final, "wer": 0.3})
    resumed.on_trial_complete("a", {**final, "wer": 0.3})
    resumed.on_trial_result("b", final)
    resumed.on_trial_complete("b", final)
    study = optuna.load_study(study_name="rank", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    assert [(t.state, t.value) for t in study.trials] == [(optuna.trial.TrialState.COMPLETE, 0.2)] * 2
