"""A Ray Train run's reports, passed to the Tune trial that started it from the trial function's own thread.

Ray's `TuneReportCallback` puts each Train report on a queue that the Tune actor's *main* thread reads and
re-reports into the trial's one-slot result queue. When the run's last report is still on that queue as
`fit()` returns, the trial function's end-of-function marker can take the slot first; the main thread then
blocks for ever putting the late report, and the trial hangs after its last step (Ray 2.60; traced with
py-spy in docs/testing.md). Here the Train controller's callback only queues each report, and the thread
Tune expects reports from, the trial function's, passes them on in order and returns only after the last.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any

from ray.train.v2.api.callback import UserCallback
from ray.util.queue import Empty, Queue

CHECKPOINT_PATH = "checkpoint_path"
"""The key under which a report's checkpoint location reaches Tune (as with Ray's own callback)."""
FIT_ENDED = "fit ended"
"""What the thread running `fit()` puts on the queue after the run's last report."""
POLL_S = 1.0
"""How long one wait for a report lasts before the trial checks that the thread running `fit()` is alive."""


class QueuedReports(UserCallback):
    """Runs in the Train controller: every report of rank 0, with its checkpoint's path, onto `queue`.

    The queue holds one report, so a run cannot get ahead of what its trial has passed on to Tune."""

    def __init__(self, queue: Queue) -> None:
        self.queue = queue

    def after_report(self, run_context: Any, metrics: list[dict[str, Any]], checkpoint: Any) -> None:
        report = dict(metrics[0])
        if checkpoint is not None:
            report[CHECKPOINT_PATH] = checkpoint.path
        self.queue.put(report)


def fit_reporting(make_trainer: Callable[[Sequence[Any]], Any],
                  report: Callable[[dict[str, Any]], None] | None = None) -> Any:
    """Run `make_trainer(callbacks).fit()` and pass each of its reports to `report` (default `ray.tune.report`)
    from the calling thread; the Train run's Result once every report has been passed on. A failed run's
    error is raised here, after the reports it made."""
    if report is None:
        from ray import tune

        report = tune.report
    reports = Queue(maxsize=1, actor_options={"num_cpus": 0})
    try:
        trainer = make_trainer([QueuedReports(reports)])
        outcome: dict[str, Any] = {}

        def fit() -> None:
            try:
                outcome["result"] = trainer.fit()
            except BaseException as error:  # handed to the trial's thread, which raises it
                outcome["error"] = error
            finally:
                # After every report the controller put (each put waits for the queue actor), so the trial
                # thread stops reading as soon as the run has ended, without polling.
                reports.put(FIT_ENDED)

        runner = threading.Thread(target=fit, name="train-fit", daemon=True)
        runner.start()
        while True:
            try:
                item = reports.get(timeout=POLL_S)
            except Empty:
                if runner.is_alive():
                    continue
                break  # the end marker could not be put: the queue actor is gone
            if item == FIT_ENDED:
                break
            report(item)
        runner.join()
        if "error" in outcome:
            raise outcome["error"]
        return outcome["result"]
    finally:
        reports.shutdown()
