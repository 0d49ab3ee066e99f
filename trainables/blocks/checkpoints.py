"""Mid-training checkpoints: what lets a trial survive the loss of its worker, its node or the sweep's driver.

Inside Ray Train, every `optim.checkpoint_every` steps a method's loop reports a checkpoint through
`ray.train.report(..., checkpoint=...)` holding everything the next step depends on: the trainable weights,
the optimiser, schedule and loss-scaler state, every random generator (per worker), how many batches each
data stream has handed out, and the per-step history so far. When Ray Train restarts the worker group (its
`FailureConfig`) or Tune restarts the trial, the new workers find that checkpoint with
`ray.train.get_checkpoint()` and the loop carries on from the step after it: the trial trains exactly
`max_steps` steps and its history holds each step once.

A method makes one Checkpointer per run (which modules' weights, and any state of its own, a resumed run
needs) and trains with `loop.fit`, which is the only caller of `steps` and `step_done`; a method with phases
calls `fit` once per phase with the same Checkpointer:

    ckpt = Checkpointer(cfg.optim.checkpoint_every, {"model": model}, total_steps=steps)
    fit(ckpt, stepper, micro_loss, streams={"train": batches}, generators={"augment": gen}, ...)
    return ckpt.history, stepper

Outside Ray Train (tests, notebooks, benchmarks) nothing is saved and nothing is restored.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from trainables.blocks import progress
from trainables.blocks.batching import BatchStream
from trainables.blocks.distributed import all_gather_objects, in_ray_train, world
from trainables.blocks.finish import report
from trainables.blocks.training import Stepper, unwrap

STATE_FILE = "training_state.pt"
"""The file in a mid-training checkpoint (a trial's final checkpoint is its artifact folder instead)."""
ATTEMPTS = "attempts"
"""The folder in a Train run's storage with one marker per start of the run: JSON of `node_id`, `pid` (rank 0's
worker process) and `started` (Unix time)."""

ExtraState = tuple[Callable[[], dict[str, Any]], Callable[[dict[str, Any]], None]]
"""A method's own resumable state beyond weights and optimiser (e.g. AdaLoRA's importance scores): (get, set)."""


def rng_state() -> dict[str, Any]:
    """This process's global random generators, in types `torch.load(weights_only=True)` reads back."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {"python": random.getstate(), "torch": torch.get_rng_state(),
             "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                       "has_gauss": int(has_gauss), "gauss": float(gauss)}}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(_as_tuple(state["python"]))
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _as_tuple(value: Any) -> Any:
    """random.setstate wants tuples all the way down; a saved state may come back with lists."""
    return tuple(_as_tuple(v) for v in value) if isinstance(value, (list, tuple)) else value


def report_checkpoint(metrics: dict[str, float], folder: Path | None, step: int) -> None:
    """Report `metrics` to Ray Train with the checkpoint in `folder` (rank 0) or without one (the other ranks)."""
    import ray.train

    checkpoint = ray.train.Checkpoint.from_directory(str(folder)) if folder is not None else None
    ray.train.report(metrics, checkpoint=checkpoint, checkpoint_dir_name=f"checkpoint_step{step:07d}" if folder else None)


def _latest_checkpoint() -> Any:
    """Ray Train's latest checkpoint of this run (None on a fresh start, or outside Ray Train)."""
    if not in_ray_train():
        return None
    import ray.train

    return ray.train.get_checkpoint()


def latest_state() -> dict[str, Any] | None:
    """The training state in Ray Train's latest checkpoint of this run, or None (a fresh start, or outside Ray Train)."""
    checkpoint = _latest_checkpoint()
    if checkpoint is None:
        return None
    with checkpoint.as_directory() as folder:
        path = Path(folder) / STATE_FILE
        if not path.is_file():  # the run's final artifacts: nothing to resume
            return None
        return torch.load(path, map_location="cpu", weights_only=True)


def finished_result() -> tuple[dict[str, float], Path] | None:
    """When this Ray Train run already finished (its latest checkpoint is the final artifact folder, with
    metrics.json), that result: (metrics, a private copy of the folder). A trial Tune restarts after its
    driver was lost may have finished in the meantime; it reports the result again instead of training again."""
    import json

    checkpoint = _latest_checkpoint()
    if checkpoint is None:
        return None
    with checkpoint.as_directory() as folder:
        metrics = Path(folder) / "metrics.json"
        if not metrics.is_file():
            return None
        copy = Path(tempfile.mkdtemp(prefix="trial-artifacts-"))
        shutil.copytree(folder, copy, dirs_exist_ok=True)
    return json.loads((copy / "metrics.json").read_text()), copy


def saving() -> bool:
    """Whether checkpoints are written: inside Ray Train (tests of the resume logic itself replace this)."""
    return in_ray_train()


class Checkpointer:
    """Saves and restores one training run's resumable state; keeps its per-step history.

    `every` = 0 never saves, and so never restores. Weights are those of `modules`' parameters that train (requires_grad), by name;
    frozen (possibly quantised) base weights are rebuilt by the method's setup, as on a first start.
    """

    def __init__(self, every: int, modules: Mapping[str, torch.nn.Module], *, total_steps: int,
                 extra: ExtraState | None = None) -> None:
        self.every, self.total_steps, self.extra = every, total_steps, extra
        self.modules = {name: unwrap(m) for name, m in modules.items()}
        self.history: list[dict[str, float]] = []
        # A run that never saves has nothing to resume from (a checkpoint there belongs to another loop of the trial).
        self.saved = latest_state() if every > 0 else None
        self.resumed_from = 0
        """The step the run resumed after (0 on a fresh start)."""
        self._phase: tuple[Stepper, Mapping[str, BatchStream], Mapping[str, torch.Generator]] | None = None
        if self.saved is not None:
            self._load_weights(self.saved["weights"])
            self.history = list(self.saved["history"])
            self.resumed_from = int(self.saved["step"])
            if extra is not None:
                extra[1](self.saved.get("extra", {}))
            print(f"resuming from the checkpoint at step {self.resumed_from}", flush=True)

    def steps(self, first: int, last: int, stepper: Stepper, *, streams: Mapping[str, BatchStream] | None = None,
              generators: Mapping[str, torch.Generator] | None = None) -> range:
        """The steps of a phase (`first`..`last` on the run's step axis) still to train.

        When the checkpoint fell inside this phase, its stepper, data streams and generators (and the
        process's global generators) are first brought back to where the checkpoint left them; a phase
        that had ended before the checkpoint has nothing left to train."""
        streams, generators = dict(streams or {}), dict(generators or {})
        self._phase = (stepper, streams, generators)
        saved = self.saved
        if saved is not None and saved["step"] == first - 1:
            # Saved on the previous phase's last step: this phase starts afresh, but from the random state the
            # previous phase left (its dropout masks), not from the one setup left.
            set_rng_state(self._worker_rng(saved)["global"])
        if saved is None or saved["step"] < first:
            return range(first, last + 1)
        if saved["step"] >= last:
            return range(0)
        stepper.load_state_dict(saved["stepper"])
        for name, stream in streams.items():
            stream.skip(int(saved["streams"][name]))
        per_worker = self._worker_rng(saved)
        for name, gen in generators.items():
            gen.set_state(per_worker["generators"][name])
        set_rng_state(per_worker["global"])
        return range(int(saved["step"]) + 1, last + 1)

    @staticmethod
    def _worker_rng(saved: dict[str, Any]) -> dict[str, Any]:
        """This worker's generator states in a saved state (each worker saved its own)."""
        return saved["rng"][world()[0] % len(saved["rng"])]

    def step_done(self, step: int, point: dict[str, float], validation: dict[str, float] | None = None) -> None:
        """Record a finished step; report validation metrics and, when one is due, a checkpoint, to Ray Train."""
        self.history.append(point)
        metrics = {**point, **(validation or {})}
        if self.due(step):
            self._save_and_report(step, metrics)
        elif validation:
            report(metrics)

    def due(self, step: int) -> bool:
        """A checkpoint after `step`: every `every` steps, not after the last (the final report carries the result)."""
        return self.every > 0 and step % self.every == 0 and step < self.total_steps and saving()

    def _save_and_report(self, step: int, metrics: dict[str, float]) -> None:
        assert self._phase is not None, "loop.fit calls steps before step_done"
        stepper, streams, generators = self._phase
        # Every worker's generators (each draws its own augmentation and dropout), gathered to rank 0.
        mine = {"global": rng_state(), "generators": {name: g.get_state() for name, g in generators.items()}}
        every_rng = all_gather_objects(mine)
        if world()[0] != 0:
            report_checkpoint(metrics, None, step)
            return
        state = {"step": step, "weights": self._weights(), "stepper": stepper.state_dict(),
                 "streams": {name: s.consumed for name, s in streams.items()}, "rng": every_rng,
                 "history": list(self.history), "extra": self.extra[0]() if self.extra else {}}
        folder = Path(tempfile.mkdtemp(prefix="trial-checkpoint-"))
        try:
            torch.save(state, folder / STATE_FILE)
            progress.post(force=True, step=step, checkpoint=step)
            report_checkpoint(metrics, folder, step)
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def _weights(self) -> dict[str, dict[str, torch.Tensor]]:
        return {name: {n: p.detach().cpu().clone() for n, p in m.named_parameters() if p.requires_grad}
                for name, m in self.modules.items()}

    def _load_weights(self, saved: Mapping[str, Mapping[str, torch.Tensor]]) -> None:
        for name, module in self.modules.items():
            params = dict(module.named_parameters())
            trained = {n for n, p in params.items() if p.requires_grad}
            if name not in saved:
                raise RuntimeError(f"checkpoint does not match the model: it holds no weights for {name!r}")
            unknown = sorted(set(saved[name]) - set(params))
            absent = sorted(trained - set(saved[name]))
            reshaped = [n for n, t in saved[name].items() if n in params and t.shape != params[n].shape]
            for problem, names in (("the model has no", unknown), ("the checkpoint lacks", absent),
                                   ("shapes differ for", reshaped)):
                if names:
                    raise RuntimeError(f"checkpoint does not match the model: {problem} {name}.{names[0]}"
                                       + (f" (and {len(names) - 1} more)" if len(names) > 1 else ""))
            with torch.no_grad():
                for n, tensor in saved[name].items():
                    params[n].copy_(tensor.to(params[n].device, params[n].dtype))


def restarts() -> int:
    """How many times this Ray Train run has been started before (0 on its first attempt; 0 outside Ray Train).

    Each start leaves a marker in the run's own storage folder (shared by every node, local or s3://), so
    a restart by Ray Train's failure policy and a trial restarted by Tune after the driver was lost both count.
    The marker holds where rank 0 of that attempt runs (see `ATTEMPTS`), to tell which node a run was on.
    Every worker must call it (rank 0 counts and writes; the others learn its answer)."""
    if not in_ray_train():
        return 0
    count = 0
    if world()[0] == 0:
        import ray.train  # binds `ray` too
        from pyarrow.fs import FileSelector

        storage = ray.train.get_context().get_storage()
        fs, folder = storage.storage_filesystem, f"{storage.experiment_fs_path}/{ATTEMPTS}"
        fs.create_dir(folder, recursive=True)
        count = len(fs.get_file_info(FileSelector(folder, allow_not_found=True)))
        where = {"node_id": ray.get_runtime_context().get_node_id(), "pid": os.getpid(), "started": time.time()}
        with fs.open_output_stream(f"{folder}/{uuid.uuid4().hex}") as out:
            out.write(json.dumps(where).encode())
    return int(all_gather_objects(count)[0])
