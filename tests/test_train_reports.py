"""Train reports reach Tune from the trial's own thread, all of them, in order, even when the run ends first.

The trainer here is a stand-in whose `fit()` calls the callbacks as Ray Train's controller would and returns at
once after its last report, while the Tune side is slow: the timing in which Ray's own bridge lost the last
report and hung the trial. The sweeps in test_sweep.py and test_postgres.py run the real TorchTrainer path."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import pytest

pytestmark = pytest.mark.integration  # starts Ray (the report queue is an actor)


@pytest.fixture(scope="module")
def ray_local():
    import ray

    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


class Checkpoint:
    path = "/storage/checkpoint_000002"


class QuickRun:
    """Reports `n` times, the last with a checkpoint, then returns (or raises `error`) without waiting."""

    def __init__(self, callbacks: Sequence[Any], n: int, error: Exception | None = None) -> None:
        self.callbacks, self.n, self.error = callbacks, n, error

    def fit(self) -> str:
        for step in range(1, self.n + 1):
            for callback in self.callbacks:
                callback.after_report(None, [{"step": step}, {"step": -1}], Checkpoint() if step == self.n else None)
        if self.error:
            raise self.error
        return "result"


def slow_recorder(seen: list[dict[str, Any]]) -> Any:
    def report(metrics: dict[str, Any]) -> None:
        time.sleep(0.3)  # Tune busy with its controller loop
        seen.append(metrics)

    return report


def test_every_report_is_passed_on_before_the_result(ray_local) -> None:
    from platform.train_reports import CHECKPOINT_PATH, fit_reporting

    seen: list[dict[str, Any]] = []
    result = fit_reporting(lambda callbacks: QuickRun(callbacks, 4), report=slow_recorder(seen))
    assert result == "result"
    # rank 0's metrics only, in order, the last one with its checkpoint's path
    assert [m["step"] for m in seen] == [1, 2, 3, 4]
    assert seen[-1][CHECKPOINT_PATH] == Checkpoint.path
    assert all(CHECKPOINT_PATH not in m for m in seen[:-1])


def test_a_failed_run_raises_after_its_reports(ray_local) -> None:
    from platform.train_reports import fit_reporting

    seen: list[dict[str, Any]] = []
    with pytest.raises(RuntimeError, match="worker died"):
        fit_reporting(lambda callbacks: QuickRun(callbacks, 2, RuntimeError("worker died")), report=slow_recorder(seen))
    assert [m["step"] for m in seen] == [1, 2]


def test_an_error_building_the_trainer_is_raised(ray_local) -> None:
    from platform.train_reports import fit_reporting

    def bad(callbacks: Sequence[Any]) -> Any:
        raise ValueError("num_workers: method 'x' trains on at most 1 worker(s), got 2")

    with pytest.raises(ValueError, match="num_workers"):
        fit_reporting(bad, report=slow_recorder([]))
