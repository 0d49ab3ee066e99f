"""The step loop every method trains with: `fit`, called once per training phase.

A method builds its model, its optimiser step (`training.Stepper`) and its checkpointer (which weights and
state a resumed run needs), then hands `fit` the loss of one micro-batch. `fit` is the only loop over
optimiser steps in `trainables/`:

    for each step still to train in this phase (after a restart: from the step after the latest checkpoint)
        before_step(step)                        the method's per-step switch (e.g. which data stream)
        one optimiser step on micro_loss         autocast, accumulation, clipping, schedule (Stepper.step)
        validate() when eval_every says so       val_wer / val_cer, reported to Ray Tune (what ASHA reads)
        record the step; save a checkpoint when one is due (Checkpointer.step_done)

Progress (step, loss, validation WER) reaches the sweep's console from Stepper.step and results.report.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from tqdm import tqdm

from trainables.blocks.batching import BatchStream
from trainables.blocks.checkpoints import Checkpointer
from trainables.blocks.training import MicroLoss, Stepper

Validate = Callable[[], dict[str, float]]
"""Scores the model on the validation split: {"val_wer": ..., "val_cer": ...} (evaluation.validator builds one)."""


def fit(ckpt: Checkpointer, stepper: Stepper, micro_loss: MicroLoss, *, first: int = 1,
        streams: Mapping[str, BatchStream] | None = None, generators: Mapping[str, torch.Generator] | None = None,
        validate: Validate | None = None, eval_every: int = 0, before_step: Callable[[int], None] | None = None,
        after_backward: Callable[[int], dict[str, float]] | None = None,
        after_update: Callable[[int], None] | None = None, names: Mapping[str, str] | None = None,
        progress_bar: str | None = None) -> None:
    """Train one phase: `stepper.cfg.max_steps` optimiser steps numbered from `first` on the run's step axis
    (a second phase starts where the first ended), recording each step in `ckpt.history`.

    `streams` and `generators` are what a resumed run must bring back to where the checkpoint left them (the
    data order, augmentation draws). `validate` runs every `eval_every` steps of the phase, never after its last
    step (the trial's end evaluates anyway). `after_backward` and `after_update` go to `Stepper.step`; `names`
    renames the step's logged values (a phase that logs its loss under its own name); `progress_bar` names a
    terminal progress bar over the phase's steps (the sweep's console hears of every step anyway)."""
    steps = stepper.cfg.max_steps
    last = first + steps - 1
    todo = ckpt.steps(first, last, stepper, streams=streams, generators=generators)
    for step in tqdm(todo, desc=progress_bar, disable=None) if progress_bar else todo:
        if before_step is not None:
            before_step(step)
        logged = stepper.step(micro_loss, after_backward=after_backward, after_update=after_update)
        point = {"step": step, **{(names or {}).get(k, k): v for k, v in logged.items()}}
        done = step - first + 1  # steps of this phase done
        due = validate is not None and eval_every > 0 and done % eval_every == 0 and done < steps
        ckpt.step_done(step, point, validate() if due else None)
