"""The training loop's shared mechanics: device and ranks, seeding, the optimiser step, timing,
cross-worker reduction, and reporting to Ray Train.

`Stepper.step` is the one place in `trainables/` that steps an optimiser: it owns autocast, fp16 loss
scaling, gradient accumulation (with DDP's gradient sync skipped on all but the last micro-batch),
clipping, the optimiser and schedule step, and the throughput timer. A method supplies only the loss
of one micro-batch; its own loop decides what a step reports and when to evaluate.
"""

from __future__ import annotations

import contextlib
import math
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch

from trainables.blocks import progress
from trainables.blocks.config import ConfigError, require
from trainables.blocks.distributed import in_ray_train, world
from trainables.blocks.metrics import EnergyMeter


@dataclass
class OptimConfig:
    """Optimiser, schedule and step budget."""

    name: Literal["adamw", "paged_adamw_8bit", "paged_adamw_32bit"] = "adamw"
    """adamw (torch), or bitsandbytes' paged AdamW with 8- or 32-bit state (CUDA only)."""
    lr: float = 1e-3
    """Peak learning rate."""
    weight_decay: float = 0.0
    """Decoupled weight decay."""
    max_steps: int = 100
    """Optimiser steps to train for (0 = evaluate the untuned model only)."""
    warmup_steps: int = 10
    """Linear warm-up steps from 0 to lr, then cosine decay to 0 at max_steps."""
    batch_size: int = 8
    """Utterances per worker per micro-batch."""
    grad_accum: int = 1
    """Micro-batches per optimiser step."""
    max_grad_norm: float = 1.0
    """Gradient clipping norm (0 = off)."""
    autocast: Literal["auto", "off", "bf16", "fp16"] = "auto"
    """Mixed precision: auto = bf16 (or fp16) on CUDA, off on CPU."""
    checkpoint_every: int = 50
    """Inside Ray Train, save a resumable checkpoint every this many steps (0 = never): a trial whose worker
    or node is lost resumes from the latest one (trainables/blocks/checkpoints.py)."""

    def check(self) -> None:
        require(self.lr > 0, "lr", f"must be positive, got {self.lr}")
        require(self.weight_decay >= 0, "weight_decay", "must be >= 0")
        require(self.max_steps >= 0, "max_steps", f"must be >= 0 (0 evaluates the untuned model), got {self.max_steps}")
        require(0 <= self.warmup_steps <= self.max_steps, "warmup_steps", "must be in [0, max_steps]")
        require(self.batch_size >= 1, "batch_size", f"must be at least 1, got {self.batch_size}")
        require(self.grad_accum >= 1, "grad_accum", f"must be at least 1, got {self.grad_accum}")
        require(self.max_grad_norm >= 0, "max_grad_norm", "must be >= 0")
        require(self.checkpoint_every >= 0, "checkpoint_every", f"must be >= 0 (0 = never), got {self.checkpoint_every}")


def device() -> torch.device:
    if in_ray_train():
        import ray.train.torch

        return ray.train.torch.get_device()
    return torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


ParamGroups = list[torch.nn.Parameter] | list[dict[str, Any]]
"""Parameters to train, or torch parameter groups (dicts with "params" and optional per-group "lr")."""


def make_optimizer(cfg: OptimConfig, params: ParamGroups, dev: torch.device) -> torch.optim.Optimizer:
    groups = params if params and isinstance(params[0], dict) else [{"params": list(params)}]
    if not any(g["params"] for g in groups):
        raise ConfigError("optim: the model has no trainable parameter")
    if cfg.name == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if dev.type != "cuda":
        raise ConfigError(f"optim.name: {cfg.name!r} pages optimiser state through CUDA unified memory; use adamw on CPU")
    import bitsandbytes as bnb

    cls = bnb.optim.PagedAdamW8bit if cfg.name == "paged_adamw_8bit" else bnb.optim.PagedAdamW32bit
    return cls(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)


def warmup_cosine(optimizer: torch.optim.Optimizer, warmup: int, total: int) -> torch.optim.lr_scheduler.LambdaLR:
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def autocast(cfg: OptimConfig, dev: torch.device) -> contextlib.AbstractContextManager:
    mode = autocast_mode(cfg, dev)
    if mode == "off":
        return contextlib.nullcontext()
    return torch.autocast(dev.type, dtype=torch.bfloat16 if mode == "bf16" else torch.float16)


def autocast_mode(cfg: OptimConfig, dev: torch.device) -> str:
    """off, bf16 or fp16: `auto` is bf16 on CUDA where the GPU has it, fp16 on older GPUs, off on CPU."""
    if cfg.autocast != "auto":
        return cfg.autocast
    if dev.type != "cuda":
        return "off"
    return "bf16" if torch.cuda.is_bf16_supported() else "fp16"


def grad_scaler(cfg: OptimConfig, dev: torch.device) -> torch.amp.GradScaler:
    """A loss scaler, enabled only for fp16 autocast on CUDA (bf16 has fp32's range and needs none)."""
    return torch.amp.GradScaler(dev.type, enabled=dev.type == "cuda" and autocast_mode(cfg, dev) == "fp16")


class Throughput:
    """Samples per second over steady-state steps.

    The first `skip` steps (allocator warm-up, feature caches) are left out, unless the run is too
    short to have steps after them, in which case every step counts.
    """

    def __init__(self, skip: int = 2) -> None:
        self.skip = skip
        self.samples: list[int] = []
        self.seconds: list[float] = []

    @contextlib.contextmanager
    def step(self, n_samples: int) -> Iterator[None]:
        t0 = time.perf_counter()
        yield
        self.seconds.append(time.perf_counter() - t0)
        self.samples.append(n_samples)

    @property
    def rate(self) -> float:
        start = self.skip if len(self.seconds) > self.skip else 0
        seconds = sum(self.seconds[start:])
        return sum(self.samples[start:]) / seconds if seconds > 0 else float("nan")


MicroLoss = Callable[[int], tuple[torch.Tensor, dict[str, float]]]
"""A method's loss on micro-batch i of a step, with the named parts it wants logged (floats)."""


class Stepper:
    """Optimiser, schedule, loss scaler and throughput timer of one training run, and its step.

    `step(micro_loss)` runs `optim.grad_accum` micro-batches (each loss under autocast, divided by
    the number of micro-batches, scaled when fp16 needs it, and back-propagated), then unscales,
    clips, steps the optimiser (the scaler skips a step whose gradients overflowed), updates the
    scale, zeroes the gradients and steps the schedule. It returns the step's mean loss, the mean
    of each logged part over the micro-batches that gave it, and the learning rate.
    """

    def __init__(self, cfg: OptimConfig, params: ParamGroups, dev: torch.device,
                 model: torch.nn.Module | None = None) -> None:
        self.cfg = cfg
        self.optimizer = make_optimizer(cfg, params, dev)
        self.schedule = warmup_cosine(self.optimizer, cfg.warmup_steps, cfg.max_steps)
        self.scaler = grad_scaler(cfg, dev)
        self.timer = Throughput()
        self.energy = EnergyMeter(dev)
        self.dev = dev
        self.params = [p for group in self.optimizer.param_groups for p in group["params"]]
        self.ddp = model if isinstance(model, torch.nn.parallel.DistributedDataParallel) else None
        self.world_size = world()[1]
        self.steps_done = 0

    def step(self, micro_loss: MicroLoss, *, after_backward: Callable[[int], dict[str, float]] | None = None,
             after_update: Callable[[int], None] | None = None) -> dict[str, float]:
        """One optimiser step. `after_backward(micro)` may log more parts once a micro-batch's backward
        is done; `after_update(step)` runs after the optimiser step, before the gradients are zeroed."""
        cfg, n = self.cfg, self.cfg.grad_accum
        total = 0.0
        parts: dict[str, list[float]] = {}
        with self.timer.step(cfg.batch_size * n * self.world_size), self.energy.window():
            for micro in range(n):
                # DDP all-reduces gradients in every backward; only the last micro-batch's needs it.
                last = micro == n - 1
                sync = self.ddp.no_sync() if self.ddp is not None and not last else contextlib.nullcontext()
                with sync:
                    with autocast(cfg, self.dev):
                        loss, logged = micro_loss(micro)
                        loss = loss / n
                    self.scaler.scale(loss).backward()
                total += float(loss.detach())
                if after_backward is not None:
                    logged = {**logged, **after_backward(micro)}
                for key, value in logged.items():
                    parts.setdefault(key, []).append(value)
            self.scaler.unscale_(self.optimizer)  # clip the true gradients, not the scaled ones
            if cfg.max_grad_norm > 0:
                torch.nn.utils.clip_grad_norm_(self.params, cfg.max_grad_norm)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.steps_done += 1
            if after_update is not None:
                after_update(self.steps_done)
            self.optimizer.zero_grad(set_to_none=True)
            self.schedule.step()
        progress.post(force=self.steps_done == cfg.max_steps, step=self.steps_done, max_steps=cfg.max_steps, loss=total)
        return {"loss": total, **{k: sum(v) / len(v) for k, v in parts.items()}, "lr": self.schedule.get_last_lr()[0]}

    def state_dict(self) -> dict[str, Any]:
        """Optimiser, schedule and loss-scaler state and the step count (what a resumed run continues from)."""
        return {"optimizer": self.optimizer.state_dict(), "schedule": self.schedule.state_dict(),
                "scaler": self.scaler.state_dict(), "steps_done": self.steps_done, "energy_j": self.energy.joules}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])
        if state["scaler"]:  # empty when the saving run had no fp16 loss scaling
            self.scaler.load_state_dict(state["scaler"])
        self.steps_done = int(state["steps_done"])
        if self.energy.joules is not None and state.get("energy_j") is not None:
            self.energy.joules = float(state["energy_j"])  # the earlier attempts' steps count too

    @property
    def energy_j(self) -> float | None:
        """GPU energy over this worker's training steps (None where it cannot be measured: CPU, no NVML)."""
        return self.energy.joules

    @property
    def samples_per_s(self) -> float:
        """Training throughput over steady-state steps (0 when nothing was trained)."""
        return self.timer.rate if self.steps_done else 0.0


def unwrap(model: torch.nn.Module, *, peft: bool = False) -> torch.nn.Module:
    """The model inside DDP's wrapper; with `peft`, also inside peft's (the transformers model itself)."""
    inner = model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model
    return inner.get_base_model() if peft and hasattr(inner, "get_base_model") else inner


def data_parallel(model: torch.nn.Module, dev: torch.device) -> torch.nn.Module:
    """The model wrapped in DDP when this run has more than one worker, else the model itself."""
    if world()[1] == 1:
        return model
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=[dev.index] if dev.type == "cuda" else None)


