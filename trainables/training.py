"""Pieces of a training loop that every method shares: device and ranks, optimiser and schedule,
mixed precision, throughput timing, cross-worker reduction, and reporting to Ray Train.

Each method's train loop calls these; none of them owns the loop.
"""

from __future__ import annotations

import contextlib
import math
import random
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.distributed as dist

from trainables.config import ConfigError, require


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

    def check(self) -> None:
        require(self.lr > 0, "lr", f"must be positive, got {self.lr}")
        require(self.weight_decay >= 0, "weight_decay", "must be >= 0")
        require(self.max_steps >= 0, "max_steps", f"must be >= 0 (0 evaluates the untuned model), got {self.max_steps}")
        require(0 <= self.warmup_steps <= self.max_steps, "warmup_steps", "must be in [0, max_steps]")
        require(self.batch_size >= 1, "batch_size", f"must be at least 1, got {self.batch_size}")
        require(self.grad_accum >= 1, "grad_accum", f"must be at least 1, got {self.grad_accum}")
        require(self.max_grad_norm >= 0, "max_grad_norm", "must be >= 0")


def in_ray_train() -> bool:
    try:
        import ray.train

        ray.train.get_context().get_world_size()
        return True
    except Exception:
        return False


def world() -> tuple[int, int]:
    """(rank, world size) of this worker."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def device() -> torch.device:
    if in_ray_train():
        import ray.train.torch

        return ray.train.torch.get_device()
    return torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def make_optimizer(cfg: OptimConfig, params: list[torch.nn.Parameter], dev: torch.device) -> torch.optim.Optimizer:
    if not params:
        raise ConfigError("optim: the model has no trainable parameter")
    if cfg.name == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if dev.type != "cuda":
        raise ConfigError(f"optim.name: {cfg.name!r} pages optimiser state through CUDA unified memory; use adamw on CPU")
    import bitsandbytes as bnb

    cls = bnb.optim.PagedAdamW8bit if cfg.name == "paged_adamw_8bit" else bnb.optim.PagedAdamW32bit
    return cls(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def warmup_cosine(optimizer: torch.optim.Optimizer, warmup: int, total: int) -> torch.optim.lr_scheduler.LambdaLR:
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def autocast(cfg: OptimConfig, dev: torch.device) -> contextlib.AbstractContextManager:
    mode = cfg.autocast
    if mode == "auto":
        mode = ("bf16" if torch.cuda.is_bf16_supported() else "fp16") if dev.type == "cuda" else "off"
    if mode == "off":
        return contextlib.nullcontext()
    return torch.autocast(dev.type, dtype=torch.bfloat16 if mode == "bf16" else torch.float16)


def grad_scaler(cfg: OptimConfig, dev: torch.device) -> torch.amp.GradScaler:
    """A loss scaler, enabled only for fp16 autocast on CUDA."""
    fp16 = dev.type == "cuda" and (cfg.autocast == "fp16" or (cfg.autocast == "auto" and not torch.cuda.is_bf16_supported()))
    return torch.amp.GradScaler(dev.type, enabled=fp16)


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


def all_gather_objects(obj: Any) -> list[Any]:
    _, size = world()
    if size == 1:
        return [obj]
    out: list[Any] = [None] * size
    dist.all_gather_object(out, obj)
    return out


def reduce_max(value: float) -> float:
    return max(all_gather_objects(value))


def reduce_sum(value: float) -> float:
    return sum(all_gather_objects(value))


def report(metrics: dict[str, float], artifacts: Path | None = None) -> None:
    """Send metrics (and, from rank 0, an artifact directory as the checkpoint) to Ray Train.

    Outside Ray Train (unit tests, notebooks) the metrics are printed.
    """
    if not in_ray_train():
        print({k: round(v, 4) if isinstance(v, float) else v for k, v in metrics.items()}, flush=True)
        return
    import ray.train

    checkpoint = None
    if artifacts is not None and world()[0] == 0:
        checkpoint = ray.train.Checkpoint.from_directory(str(artifacts))
    ray.train.report(metrics, checkpoint=checkpoint)


def artifact_dir() -> Path:
    return Path(tempfile.mkdtemp(prefix="trial-artifacts-"))
