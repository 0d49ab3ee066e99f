"""What a sweep will fetch from the Hugging Face hub, found without fetching anything (`--dry-run` prints it).

Every trial config the sweep can make is parsed as its method parses it (defaults included): the fixed config,
then each searched value and named level in turn, and the baseline's config when the sweep measures one. Its
models are the string fields that name a hub id (not an offline asset, an existing path or a folder field); its
data sets are the hub sources of config sections that carry a `hub_config` (`data`, WhisTLE's `target`), with
the configuration and the splits the loader will ask for.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from platform.spaces import ResolvedSweep
from trainables import load_method

_PATH_SUFFIXES = ("_dir", "path", "_file")
"""Fields whose value is a local path even when it looks like `owner/name`."""
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass(frozen=True)
class HubFetch:
    """One model or data set a sweep reads from the hub."""

    kind: Literal["model", "dataset"]
    name: str
    """Hub id, e.g. openai/whisper-small or google/fleurs."""
    config: str | None = None
    """Data sets: the configuration loaded (e.g. en_us), None for the data set's default."""
    splits: tuple[str, ...] = ()
    """Data sets: the data set's own split names that are read, in first-use order."""
    fields: tuple[str, ...] = ()
    """The config keys that name it (e.g. teacher, data.source)."""


def sweep_configs(sweep: ResolvedSweep) -> list[tuple[str, dict[str, Any]]]:
    """(label, method config) of every variant the sweep can run: the first level of every searched key, then each
    other value or named level of one key at a time, then the baseline's config (when the sweep measures one)."""
    first = {key: param.levels()[0] for key, param in sweep.space.items()}
    out = [("trials", sweep.trial_config(first))]
    for key, param in sweep.space.items():
        out += [("trials", sweep.trial_config({**first, key: level})) for level in param.levels()[1:]]
    module = load_method(sweep.method)
    if sweep.baseline and hasattr(module, "baseline_config"):
        out.append(("baseline", module.baseline_config(sweep.config)))
    return out


def _hub_source(value: Any) -> bool:
    from trainables.blocks.data import source_kind

    if not isinstance(value, str):
        return False
    try:
        return source_kind(value) == "hub"
    except ValueError:  # a text file, or a name the config's own check rejects
        return False


def _hub_model(key: str, value: Any) -> bool:
    from trainables.assets import ASSETS

    if not isinstance(value, str) or key.endswith(_PATH_SUFFIXES) or value in ASSETS:
        return False
    return bool(_HUB_ID.match(value)) and not Path(value).expanduser().exists()


def _source_splits(section: Any, field: str) -> list[str]:
    """The splits of `section.<field>` its loader reads: a speech source's train, validation and test splits,
    an evaluation source's eval split, or the train split whose transcripts are a target text."""
    if field == "source":
        return [section.train_split, section.val_split, section.eval_split]
    if field == "eval_source":
        return [section.eval_split]
    return ["train"]  # `text`: load_texts reads the train split's transcripts


def _walk(node: Any, prefix: str, found: list[HubFetch]) -> None:
    from trainables.blocks.data import hub_config_name, hub_split_name

    is_data = hasattr(node, "hub_config")
    for f in dataclasses.fields(node):
        value = getattr(node, f.name)
        key = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            _walk(value, f"{key}.", found)
        elif is_data and f.name in ("source", "eval_source", "text") and _hub_source(value):
            splits = tuple(hub_split_name(value, s) for s in _source_splits(node, f.name))
            found.append(HubFetch("dataset", value, hub_config_name(value, node.hub_config), splits, (key,)))
        elif _hub_model(key, value):
            found.append(HubFetch("model", value, fields=(key,)))


def hub_fetches(sweep: ResolvedSweep) -> list[HubFetch]:
    """Every model and data set (with its configuration and splits) the sweep's trials and baseline read from the
    hub, each once, models first, in first-use order; nothing is fetched or built."""
    module = load_method(sweep.method)
    found: list[HubFetch] = []
    for _, config in sweep_configs(sweep):
        _walk(module.parse_config(config), "", found)
    merged: dict[tuple[str, str, str | None], HubFetch] = {}
    for item in found:
        ident = (item.kind, item.name, item.config)
        seen = merged.get(ident)
        if seen is None:
            merged[ident] = item
        else:
            merged[ident] = dataclasses.replace(seen, splits=tuple(dict.fromkeys(seen.splits + item.splits)),
                                                fields=tuple(dict.fromkeys(seen.fields + item.fields)))
    return sorted(merged.values(), key=lambda item: item.kind != "model")  # stable: first use within each kind


def fetches_text(fetches: list[HubFetch]) -> str:
    """The plan's `hub fetches` section: one line per model or data set, or `none`."""
    if not fetches:
        return "hub fetches: none (offline assets and local data only)"
    from trainables.blocks.data import PARQUET_REVISION

    lines = ["hub fetches (listed, not fetched):"]
    for item in fetches:
        where = ", ".join(item.fields)
        if item.kind == "model":
            lines.append(f"  model    {item.name}  ({where})")
        else:
            config = f"config {item.config}, " if item.config else ""
            lines.append(f"  dataset  {item.name}  {config}splits {', '.join(item.splits)}  ({where})")
    if any(item.kind == "dataset" for item in fetches):
        lines.append(f"  (a data set that still ships a loading script is read from its parquet export, {PARQUET_REVISION})")
    return "\n".join(lines)
