"""On-disk cache for expensive shared work, keyed by its inputs.

Assets (converted models, synthetic corpora, teacher outputs) are built once and reused by every
trial. A directory is published atomically: it is built under a temporary name and renamed into
place, so a crash never leaves a half-written asset, and a lock file serialises concurrent builders
(several Ray workers asking for the same asset at once).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

CACHE_ENV = "SPEECH_SWEEPS_CACHE"


def cache_root() -> Path:
    """Root of the cache: `$SPEECH_SWEEPS_CACHE`, else `~/.cache/speech-sweeps`."""
    root = os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "speech-sweeps"
    return Path(root).expanduser()


def input_key(inputs: dict[str, Any]) -> str:
    """A short, stable hash of a JSON-serialisable description of an asset's inputs."""
    blob = json.dumps(inputs, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def build_once(target: Path, build: Callable[[Path], None], inputs: dict[str, Any] | None = None) -> Path:
    """Return `target`, building it first with `build(tmp_dir)` if it does not exist yet.

    `build` writes into an empty temporary directory, which is renamed to `target` only when it
    returns; `inputs` are written to `target/inputs.json` so a user can see what an asset was made from.
    """
    marker = target / ".complete"
    if marker.exists():
        return target
    with _locked(target.with_name(target.name + ".lock")):
        if marker.exists():
            return target
        tmp = target.with_name(target.name + f".tmp-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        try:
            started = time.perf_counter()
            build(tmp)
            if inputs is not None:
                (tmp / "inputs.json").write_text(json.dumps(inputs, indent=2, sort_keys=True, default=str))
            (tmp / ".complete").write_text("")
            shutil.rmtree(target, ignore_errors=True)
            os.replace(tmp, target)
            _log_build(target, time.perf_counter() - started)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return target


BUILD_LOG = "builds.jsonl"
"""One JSON line per build under the cache root: what was built, when, by which process, in how long."""


def _log_build(target: Path, seconds: float) -> None:
    line = {"target": str(target.relative_to(cache_root())) if target.is_relative_to(cache_root()) else str(target),
            "seconds": round(seconds, 2), "pid": os.getpid(), "at": time.strftime("%Y-%m-%dT%H:%M:%S")}
    with _locked(cache_root() / (BUILD_LOG + ".lock")), open(cache_root() / BUILD_LOG, "a") as fh:
        fh.write(json.dumps(line) + "\n")


def builds(prefix: str = "") -> list[dict[str, Any]]:
    """The build log's entries whose target starts with `prefix` (e.g. "tle/"), oldest first."""
    path = cache_root() / BUILD_LOG
    rows = [json.loads(x) for x in path.read_text().splitlines() if x.strip()] if path.exists() else []
    return [r for r in rows if r["target"].startswith(prefix)]
