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
