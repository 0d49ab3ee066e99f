"""Worker-side code: one module per adaptation method, plus the building blocks they share.

METHODS is the explicit registry from a method's name to its module. Each method module defines
`CONFIG` (its config dataclass), `parse_config(dict)`, `train_loop_per_worker(dict)` and
`baseline_config(dict)` (the config that evaluates the untuned model).
"""

from __future__ import annotations

import importlib
from types import ModuleType

METHODS: dict[str, str] = {
    "qlora": "trainables.qlora",
    "dq_whisper": "trainables.dq_whisper",
    "dqlora": "trainables.dqlora",
}


def load_method(name: str) -> ModuleType:
    if name not in METHODS:
        raise KeyError(f"unknown method {name!r} (known: {', '.join(sorted(METHODS))})")
    return importlib.import_module(METHODS[name])
