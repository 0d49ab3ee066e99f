"""The sweep's untuned-model baseline, measured once per machine and then read from the on-disk cache.

Measuring the untuned model is its own Ray Train run (minutes on a laptop: the largest fixed cost of a small
sweep), and re-running the same sweep measures the same thing again. Its result is kept in
`cache_root()/baselines/<method>-<key>.json`, keyed by everything that decides it: the method, its whole
baseline config, the code that runs it, the library versions and the device. Any change to those is a new key,
so a stale measurement is never read; `python -m platform.sweep NAME --fresh-baseline` measures again anyway.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trainables.assets.cache import cache_root, input_key
from trainables.blocks.config import flatten, redact

if TYPE_CHECKING:
    from platform.spaces import ResolvedSweep

TRAINABLES = Path(__file__).resolve().parents[1] / "trainables"
PACKAGES = ("torch", "transformers", "peft", "bitsandbytes")


@dataclass(frozen=True)
class Baseline:
    """A baseline's metrics, the cache file that holds them, when they were measured, and whether this sweep
    read them from the cache (True) or measured them itself (False)."""

    metrics: dict[str, float]
    path: Path
    measured_at: str
    cached: bool


def code_fingerprint(root: Path = TRAINABLES) -> str:
    """sha256 over every `*.py` file under `root` (path and contents), sorted by path: any code change is a new key."""
    h = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        h.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()


def package_versions() -> dict[str, str | None]:
    """The installed versions of the libraries that compute a baseline (None where one is not installed)."""
    out: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def local_paths(config: dict[str, Any]) -> dict[str, str]:
    """A fingerprint (names, sizes, modification times) of each local file or folder the config names.

    Named models and corpora are content-keyed assets of the asset cache, so their names suffice; a local folder
    (`data.source: ./my_audio`, `model: /path/to/model`) is not, so a change to its files must change the key.
    """
    out = {}
    for value in flatten(config).values():
        if not isinstance(value, str) or not ("/" in value or value.startswith((".", "~"))):
            continue
        try:
            out[value] = _stat_fingerprint(Path(value).expanduser())
        except (OSError, ValueError):  # a hub name such as openai/whisper-small, or text that is no path
            continue
    return out


def _stat_fingerprint(path: Path) -> str:
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    h = hashlib.sha256()
    for f in files:
        st = f.stat()  # FileNotFoundError where nothing is there
        h.update(f"{f.relative_to(path) if f != path else f.name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def baseline_inputs(method: str, config: dict[str, Any], *, device: str, num_workers: int,
                    code: str | None = None, versions: dict[str, str | None] | None = None) -> dict[str, Any]:
    """Everything a baseline's metrics depend on; `input_key` of it names the cache file.

    `config` is the method's full baseline config (`baseline_config(sweep.config)`). Models and data are named in
    it and are themselves content-keyed assets (trainables/assets), so their names suffice; local folders it
    names are fingerprinted by `local_paths`.
    """
    return {
        "method": method,
        "config": config,
        "local_paths": local_paths(config),
        "code": code if code is not None else code_fingerprint(),
        "versions": versions if versions is not None else package_versions(),
        "device": device,
        "num_workers": num_workers,
    }


def sweep_inputs(sweep: ResolvedSweep) -> dict[str, Any]:
    """`baseline_inputs` of a resolved sweep."""
    from trainables import load_method

    config = load_method(sweep.method).baseline_config(sweep.config)
    return baseline_inputs(sweep.method, config, device="gpu" if sweep.resources.gpus_per_worker > 0 else "cpu",
                           num_workers=sweep.resources.num_workers)


def cache_path(inputs: dict[str, Any]) -> Path:
    """Where the baseline measured from `inputs` is kept."""
    return cache_root() / "baselines" / f"{inputs['method']}-{input_key(inputs)}.json"


def read(inputs: dict[str, Any]) -> Baseline | None:
    """The cached baseline for `inputs`, or None: not there, unreadable, corrupt or for other inputs (a miss,
    never an error: the caller measures again and overwrites it)."""
    path = cache_path(inputs)
    try:
        data = json.loads(path.read_text())
        metrics = data["metrics"]
        ok = (data["key"] == input_key(inputs) and isinstance(metrics, dict) and metrics
              and all(isinstance(k, str) and isinstance(v, (int, float)) and not isinstance(v, bool)
                      for k, v in metrics.items()))
        if not ok:
            return None
        return Baseline({k: float(v) for k, v in metrics.items()}, path, str(data["measured_at"]), cached=True)
    except (OSError, ValueError, KeyError, TypeError):
        return None


def write(inputs: dict[str, Any], metrics: dict[str, float]) -> Baseline:
    """Keep `metrics` for `inputs`, atomically (a temporary file renamed into place), with the inputs (secrets
    redacted) and the time, for a person reading the file."""
    path = cache_path(inputs)
    measured_at = time.strftime("%Y-%m-%dT%H:%M:%S")
    record = {"key": input_key(inputs), "measured_at": measured_at, "metrics": metrics, "inputs": redact(inputs)}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_text(json.dumps(record, indent=2, sort_keys=True, default=str))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return Baseline(dict(metrics), path, measured_at, cached=False)


def cached_or_measured(inputs: dict[str, Any], measure: Callable[[], dict[str, float]], *,
                       fresh: bool = False) -> Baseline:
    """The cached baseline for `inputs`, or `measure()`'s metrics, kept for next time.

    `fresh` skips the read (measure again, overwrite). An exception from `measure` propagates and nothing is kept:
    only successful baselines are cached. A cache that cannot be written costs only the reuse (a warning).
    """
    if not fresh:
        hit = read(inputs)
        if hit is not None:
            return hit
    metrics = measure()
    try:
        return write(inputs, metrics)
    except OSError as exc:
        print(f"warning: the baseline could not be cached ({exc}); it will be measured again next time",
              file=sys.stderr, flush=True)
        return Baseline(dict(metrics), cache_path(inputs), "", cached=False)


def plan_line(sweep: ResolvedSweep, fresh: bool = False) -> str:
    """What the sweep will do for its baseline, for the plan printed before it runs (reads, never writes)."""
    try:
        inputs = sweep_inputs(sweep)
    except Exception:  # noqa: BLE001 - the run reports a baseline config that fails
        return "the untuned model, measured once"
    path = cache_path(inputs)
    if fresh:
        return f"the untuned model, measured again (--fresh-baseline), then cached ({path})"
    hit = read(inputs)
    if hit is not None:
        return f"the untuned model, cached {hit.measured_at} ({hit.path})"
    return f"the untuned model, measured once, then cached ({path})"
