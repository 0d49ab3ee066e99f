"""The sweep's live console: per trial its step / max steps, last loss, last validation WER and what it is
preparing, with the sweep's elapsed time and an estimate of the time left; a progress bar for the baseline.

Training workers post to a progress board (trainables/blocks/progress.py), a Ray actor made here; `LiveProgress`, a
Tune callback on the driver, reads it and prints a table every `interval_s` and whenever a trial starts,
finishes or fails. It replaces Ray Tune's own status table, which knows only what trials report at evaluations.
"""

from __future__ import annotations

import contextlib
import math
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from ray.tune import Callback

from trainables.blocks.progress import BOARD_NAME, ProgressBoard


def start_board() -> Any:
    """The progress board actor of this Ray job (made once; it takes no CPU)."""
    import ray

    return ray.remote(ProgressBoard).options(name=BOARD_NAME, get_if_exists=True, num_cpus=0).remote()


def read_board(board: Any, timeout_s: float = 5.0) -> dict[str, dict[str, Any]]:
    import ray

    try:
        return ray.get(board.read.remote(), timeout=timeout_s)
    except Exception:  # noqa: BLE001 - a slow or gone board only costs one refresh of the console
        return {}


def minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min"


def _fmt(value: Any, spec: str = ".4f") -> str:
    return "-" if value is None else format(value, spec)


FINISHED_METRICS = ("val_wer", "natural_val_wer", "wer", "natural_wer")
"""What a finished trial's row shows: the validation metrics searches select on first, then the test metrics
they report."""


def trial_line(label: str, status: str, entry: dict[str, Any], result: dict[str, Any], elapsed_s: float | None) -> str:
    """One trial's row: where it is (step, loss, val WER, what it prepares) or how it ended."""
    if status == "TERMINATED":
        parts = [f"{key} {_fmt(result[key])}" for key in FINISHED_METRICS if key in result]
        if "wer" not in result:  # a scheduler stopped it before its test sets were scored
            parts.insert(0, "stopped early")
    elif status == "ERROR":
        parts = ["failed (error in MLflow: tag error, error.txt)"]
    elif status == "RUNNING":
        parts = []
        if entry.get("step") is not None:
            parts.append(f"step {entry['step']}/{entry.get('max_steps', '?')}")
            parts.append(f"loss {_fmt(entry.get('loss'))}")
        parts.append(f"val_wer {_fmt(entry.get('val_wer'))}")
        if entry.get("task"):
            done, total = entry.get("done", 0), entry.get("total")
            parts.append(f"({entry['task']} {done}/{total if total is not None else '?'})")
        elif entry.get("step") is None:
            parts.append("(starting)")
    else:
        parts = []
    when = f"{minutes(elapsed_s):>9}" if elapsed_s is not None else " " * 9
    return f"  {label:<24} {status.replace('TERMINATED', 'FINISHED'):<9} {when}  " + "  ".join(parts)


def estimate_left(running: list[tuple[float, dict[str, Any]]], finished_s: list[float], pending: int,
                  concurrent: int) -> float | None:
    """Seconds left, roughly: the running trials until their last step at their pace so far, then the trials
    not started, `concurrent` at a time, each taking the mean time of the finished ones (or, before any has
    finished, the running trials' projected time). None until something has been measured."""
    projected = [(elapsed, elapsed * e["max_steps"] / e["step"]) for elapsed, e in running if e.get("step") and e.get("max_steps")]
    per_trial = sum(finished_s) / len(finished_s) if finished_s else max((p for _, p in projected), default=None)
    if per_trial is None:
        return None
    left_running = max((max(0.0, total - elapsed) for elapsed, total in projected), default=0.0)
    unstepped = len(running) - len(projected)  # started, no step yet: assume a whole trial each
    return left_running + per_trial * (math.ceil((pending + unstepped) / max(1, concurrent)))


class LiveProgress(Callback):
    """Tune callback printing the sweep's progress table (see the module docstring)."""

    def __init__(self, board: Any, sweep: str, num_samples: int, concurrent: int, label: Callable[[Any], str],
                 interval_s: float = 30.0, stream: Any = None) -> None:
        self.board, self.sweep, self.num_samples, self.concurrent = board, sweep, num_samples, concurrent
        self.label, self.interval_s, self.stream = label, interval_s, stream
        self.started = time.time()
        self.began: dict[str, float] = {}
        self.ended: dict[str, tuple[float, str]] = {}
        """Trial id -> (when, TERMINATED or ERROR): Tune calls back before it updates the trial's status."""
        self.last_print = 0.0

    def __getstate__(self) -> dict[str, Any]:  # Tune pickles callbacks with its experiment state
        state = dict(self.__dict__)
        state["board"] = state["stream"] = None
        return state

    def table(self, trials: list[Any]) -> str:
        now = time.time()
        if self.board is None:  # restored by --resume: the board is not pickled, find this job's by name
            import ray

            if ray.is_initialized():
                with contextlib.suppress(ValueError):
                    self.board = ray.get_actor(BOARD_NAME)
        entries = read_board(self.board) if self.board is not None else {}
        lines, running, finished_s = [], [], []
        for trial in trials:
            tid = trial.trial_id
            ended, status = self.ended.get(tid, (None, trial.status))
            entry = entries.get(f"train-{tid}", {})
            began = self.began.get(tid)
            elapsed = None if began is None else (ended or now) - began
            if status == "RUNNING" and elapsed is not None:
                running.append((elapsed, entry))
            if status == "TERMINATED" and elapsed is not None:
                finished_s.append(elapsed)
            lines.append(trial_line(self.label(trial), status, entry, trial.last_result or {}, elapsed))
        done = sum(t.trial_id in self.ended or t.status in ("TERMINATED", "ERROR") for t in trials)
        pending = max(0, self.num_samples - done - len(running))
        left = estimate_left(running, finished_s, pending, self.concurrent)
        head = (f"[{time.strftime('%H:%M:%S')}] {self.sweep}: {done} of {self.num_samples} trials done, "
                f"{len(running)} running; elapsed {minutes(now - self.started)}, "
                + (f"about {minutes(left)} left" if left is not None else "time left: after the first steps"))
        return "\n".join([head, *lines])

    def show(self, trials: list[Any]) -> None:
        self.last_print = time.time()
        print(self.table(trials), file=self.stream or sys.stdout, flush=True)

    def on_step_end(self, iteration: int, trials: list[Any], **info: Any) -> None:
        if time.time() - self.last_print >= self.interval_s:
            self.show(trials)

    def on_trial_start(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self.began[trial.trial_id] = time.time()
        self.ended.pop(trial.trial_id, None)
        self.show(trials)

    def on_trial_complete(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self.ended[trial.trial_id] = (time.time(), "TERMINATED")
        self.show(trials)

    def on_trial_error(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self.ended[trial.trial_id] = (time.time(), "ERROR")
        self.show(trials)


@contextlib.contextmanager
def board_bar(board: Any, key: str, desc: str) -> Iterator[None]:
    """While the body runs, a progress bar on this terminal for the run posting under `key` (its current
    task: loading, decoding, ...), refreshed every second."""
    from tqdm import tqdm

    stop = threading.Event()

    def follow() -> None:
        bar, task = None, None
        while not stop.wait(1.0):
            entry = read_board(board, timeout_s=2.0).get(key, {})
            if entry.get("task") != task or bar is None:
                if bar is not None:
                    bar.close()
                task = entry.get("task")
                bar = tqdm(total=entry.get("total"), desc=f"{desc}: {task or 'starting'}", file=sys.stderr,
                           disable=None, leave=False)
            bar.n = entry.get("done", 0) or 0
            bar.refresh()
        if bar is not None:
            bar.close()

    thread = threading.Thread(target=follow, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=5)
