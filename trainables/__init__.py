"""Worker-side code: one module per adaptation method, plus the building blocks they share.

`METHODS` is the explicit registry from a method's name to its module, and `Method` is what such a
module must define (checked by `load_method` and by tests/test_contract.py over every entry). A method
file gets `parse_config`, `run`, `train_loop_per_worker` and `finish` from `trainables.blocks.launch.entry_points`, which
builds them from its `setup`, `train` (one `blocks.loop.fit` per phase) and `measure` (what the shared
`blocks.finish.finish_trial` scores and saves); what differs between methods is written once, in its file.
"""

from __future__ import annotations

import dataclasses
import importlib
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:  # annotations only: importing the registry stays free of torch
    import torch

    from trainables.blocks.inference import Recogniser

METHODS: dict[str, str] = {
    "qlora": "trainables.qlora",
    "dq_whisper": "trainables.dq_whisper",
    "dqlora": "trainables.dqlora",
    "whistle": "trainables.whistle",
    "llm_adaptor": "trainables.llm_adaptor",
}


@runtime_checkable
class Method(Protocol):
    """The contract of a method module (see docs/architecture.md, "The method contract")."""

    CONFIG: type
    """The method's config dataclass: nested dataclasses, a docstring per field, checks in `check()`."""
    MAX_WORKERS: int | None
    """The most Ray Train workers one trial may use (None = any: data-parallel); checked when a sweep is resolved."""

    def parse_config(self, config: dict[str, Any]) -> Any:
        """A plain dict (YAML, `--set`, a Tune trial) -> a checked CONFIG; raises ConfigError naming the field."""
        ...

    def run(self, cfg: Any) -> dict[str, float]:
        """Set up, train, evaluate and report a parsed config in this process; returns the metrics."""
        ...

    def train_loop_per_worker(self, config: dict[str, Any]) -> None:
        """Ray Train's entry point: `run(parse_config(config))`."""
        ...

    def baseline_config(self, config: dict[str, Any]) -> dict[str, Any]:
        """The config that evaluates the untuned model (no training), measured once per sweep."""
        ...

    def recogniser(self, artifacts: Path, device: torch.device) -> Recogniser:
        """A finished trial's result, from its artifact folder, loaded on `device` and ready to transcribe
        (`python -m platform.transcribe`); raises trainables.blocks.inference.ArtifactError naming what is missing."""
        ...

    def export(self, artifacts: Path, out_dir: Path, adapter_only: bool = False) -> str:
        """Write a finished trial's result to `out_dir` as a model folder others can load (a standard
        transformers folder where the result is one; `adapter_only`: the adapter, naming its base) and
        return one line saying what was written (`python -m platform.export`)."""
        ...


_FUNCTIONS = ("parse_config", "run", "train_loop_per_worker", "baseline_config", "recogniser", "export")


def contract_problems(module: Any) -> list[str]:
    """What `module` lacks or gets wrong of the `Method` contract (empty when it satisfies it)."""
    problems = [f"no {name}" for name in ("CONFIG", "MAX_WORKERS", *_FUNCTIONS) if not hasattr(module, name)]
    config = getattr(module, "CONFIG", None)
    if config is not None and not (isinstance(config, type) and dataclasses.is_dataclass(config)):
        problems.append("CONFIG is not a dataclass")
    workers = getattr(module, "MAX_WORKERS", None)
    if workers is not None and (not isinstance(workers, int) or isinstance(workers, bool) or workers < 1):
        problems.append(f"MAX_WORKERS must be None or a positive integer, not {workers!r}")
    problems += [f"{name} is not callable" for name in _FUNCTIONS if hasattr(module, name)
                 and not callable(getattr(module, name))]
    return problems


def load_method(name: str) -> ModuleType:
    if name not in METHODS:
        raise KeyError(f"unknown method {name!r} (known: {', '.join(sorted(METHODS))})")
    module = importlib.import_module(METHODS[name])
    problems = contract_problems(module)
    if problems:
        raise TypeError(f"method {name!r} ({METHODS[name]}) breaks the method contract: {'; '.join(problems)}")
    return module
