"""Live progress of a run, for the sweep's console: where each trial is (step, loss, validation WER, what it is
preparing), posted by the training workers to a small Ray actor that the sweep driver reads.

Ray Tune only hears from a trial when it reports metrics (at evaluations), which is what its scheduler
counts; progress goes beside it instead. Outside a sweep (tests, notebooks, a bare Ray Train run) there is no
board and posting does nothing; every method gets step and loss from `training.Stepper` and the validation
WER from `results.report` without doing anything itself, and wraps long preparation loops in `tracked`.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

BOARD_NAME = "speech-sweeps-progress"
"""Name of the Ray actor holding the progress board (created by the sweep driver, platform/progress.py)."""
MIN_INTERVAL_S = 0.5
"""A worker posts at most this often (the last step and state changes excepted)."""

T = TypeVar("T")


class ProgressBoard:
    """The board: the latest fields posted under each key (a Ray Train run's name: `train-<trial id>`, `baseline`)."""

    def __init__(self) -> None:
        self.entries: dict[str, dict[str, Any]] = {}

    def post(self, key: str, fields: dict[str, Any]) -> None:
        entry = self.entries.setdefault(key, {"started": time.time()})
        entry.update(fields, updated=time.time())

    def read(self) -> dict[str, dict[str, Any]]:
        return self.entries


_board: Any = None
_key: str | None = None
_looked_up = False
_last_post = 0.0


def _connect() -> tuple[Any, str | None]:
    """The board's handle and this run's key, looked up once per process (None outside a sweep, and on
    every worker but rank 0)."""
    global _board, _key, _looked_up
    if _looked_up:
        return _board, _key
    _looked_up = True
    from trainables.blocks.distributed import in_ray_train

    if not in_ray_train():
        return None, None
    import ray
    import ray.train

    context = ray.train.get_context()
    if context.get_world_rank() != 0:
        return None, None
    try:
        _board = ray.get_actor(BOARD_NAME)
    except ValueError:  # no sweep driver made one
        return None, None
    _key = context.get_experiment_name()
    return _board, _key


def post(force: bool = False, **fields: Any) -> None:
    """Post fields (step, max_steps, loss, val_wer, task, done, total) for this run; cheap, never blocks,
    throttled to one post per MIN_INTERVAL_S unless `force`."""
    global _last_post
    board, key = _connect()
    if board is None:
        return
    now = time.monotonic()
    if not force and now - _last_post < MIN_INTERVAL_S:
        return
    _last_post = now
    board.post.remote(key, fields)


def tracked(items: Iterable[T], task: str, total: int | None = None) -> Iterator[T]:
    """`items`, with a progress bar here (on a terminal) and `task i/total` on the sweep's console."""
    from tqdm import tqdm

    total = total if total is not None else (len(items) if hasattr(items, "__len__") else None)  # type: ignore[arg-type]
    post(force=True, task=task, done=0, total=total)
    for i, item in enumerate(tqdm(items, desc=task, total=total, disable=None), 1):
        yield item
        post(force=i == total, task=task, done=i, total=total)
    post(force=True, task=None)
