"""Search-space files: `search_spaces/NAME.yaml`, declarative data validated before anything runs.

A file names a method, its fixed config, the searched parameters (dotted keys into the method's
config), the searcher, an optional scheduler, the trial budget, the resources per trial, and the
`local` and `gpu` presets that override model, data and step budget. Every mistake is reported as
one line, `FILE: FIELD: what is wrong`.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from trainables import METHODS, load_method
from trainables.blocks.config import (
    ConfigError,
    build,
    coerce,
    field_type,
    flatten,
    merge,
    read_yaml,
    require,
    thaw,
    unflatten,
)
from trainables.blocks.languages import headline, language_code

SPACES_DIR = Path(__file__).resolve().parents[1] / "search_spaces"
PRESETS = ("local", "gpu")


class SpaceError(ValueError):
    """A search-space file is wrong; the message is one line naming the file and the field."""


@dataclass
class ParamSpec:
    """One searched parameter."""

    type: Literal["choice", "grid", "int", "uniform", "loguniform"]
    """choice/grid: one of `values`; int: an integer in [low, high]; uniform/loguniform: a float in [low, high]."""
    values: list[Any] | None = None
    """The levels of a choice or grid parameter."""
    low: float | None = None
    """Lower bound (int, uniform, loguniform)."""
    high: float | None = None
    """Upper bound, inclusive."""
    log: bool = False
    """int only: sample on a log scale."""
    named: dict[str, dict[str, Any]] | None = None
    """Named levels, each a set of config overrides (e.g. nf4: {precision: {bits: 4}}); the key is then a
    label, not a config field, and `values` are the level names."""

    def check(self) -> None:
        if self.named is not None:
            require(self.type in ("choice", "grid"), "type", "named levels need type choice or grid")
            require(self.values is None, "values", "named levels take their values from their names; drop values")
            require(bool(self.named), "named", "needs at least one level")
            for name, overrides in self.named.items():
                require(isinstance(overrides, dict), f"named.{name}", "must be a mapping of config overrides")
            self.values = list(self.named)
        if self.type in ("choice", "grid"):
            require(bool(self.values), "values", f"a {self.type} parameter needs a non-empty list of values")
            require(self.low is None and self.high is None, "low", f"a {self.type} parameter takes values, not low/high")
            require(len({repr(v) for v in self.values}) == len(self.values), "values", "has duplicates")
            return
        require(self.values is None, "values", f"a {self.type} parameter takes low and high, not values")
        require(self.low is not None and self.high is not None, "low", f"a {self.type} parameter needs low and high")
        for name in ("low", "high"):
            require(math.isfinite(getattr(self, name)), name, f"must be a finite number, got {getattr(self, name)}")
        require(self.low < self.high, "high", f"must be greater than low ({self.low}), got {self.high}")
        if self.type == "int":
            require(float(self.low).is_integer() and float(self.high).is_integer(), "low", "int bounds must be integers")
        if self.type == "loguniform" or self.log:
            require(self.low > 0, "low", f"a log-scale parameter needs low > 0, got {self.low}")

    def levels(self) -> list[Any]:
        """Representative values, for type-checking against the method's config."""
        if self.values is not None:
            return list(self.values)
        if self.type == "int":
            return [int(self.low), int(self.high)]
        return [float(self.low), float(self.high)]


@dataclass
class SearcherSpec:
    """How trials are proposed (always an Optuna sampler behind Ray Tune's OptunaSearch)."""

    type: Literal["tpe", "random", "grid", "nsga2"] = "tpe"
    """tpe (default), random, grid (every combination of choice/grid values), nsga2 (multi-objective)."""
    seed: int = 0
    """Sampler seed."""
    n_startup_trials: int = 4
    """TPE: random trials before the model takes over."""
    metrics: list[str] | None = None
    """Multi-objective: the metrics to optimise together (with `modes`); default: the sweep's metric."""
    modes: list[Literal["min", "max"]] | None = None
    """Multi-objective: min or max for each metric."""
    population_size: int = 50
    """NSGA-II: trials per generation. The first generation is sampled at random, so a sweep of fewer than
    two generations' trials is a random search (Optuna's default is 50)."""

    def check(self) -> None:
        require(self.n_startup_trials >= 0, "n_startup_trials", "must be >= 0")
        require(self.population_size >= 2, "population_size", "must be at least 2")
        if self.metrics is not None or self.modes is not None:
            require(bool(self.metrics), "metrics", "multi-objective search needs a non-empty list of metrics")
            require(self.modes is not None and len(self.modes) == len(self.metrics), "modes",
                    "needs one mode (min or max) per metric")
            require(len(set(self.metrics)) == len(self.metrics), "metrics", "has duplicates")
        if self.type == "nsga2":
            require(self.metrics is not None and len(self.metrics) >= 2, "metrics", "nsga2 needs two or more metrics")


@dataclass
class SchedulerSpec:
    """Early stopping of unpromising trials."""

    type: Literal["none", "asha"] = "none"
    """none, or asha (asynchronous successive halving on `metric`, compared at the same training step)."""
    metric: str = "val_wer"
    """Metric reported during training (every `eval.every` steps) that ASHA compares."""
    mode: Literal["min", "max"] = "min"
    """Whether lower or higher `metric` is better."""
    grace_period: int = 1
    """Training steps a trial makes before it may be stopped."""
    reduction_factor: float = 2.0
    """ASHA's halving rate: the top 1/reduction_factor of trials at a rung go on."""
    max_t: int | None = None
    """Steps of a trial run to the end (default: the config's optim.max_steps)."""

    def check(self) -> None:
        require(self.grace_period >= 1, "grace_period", "must be at least 1")
        require(self.reduction_factor > 1, "reduction_factor", "must be greater than 1")
        require(self.max_t is None or self.max_t >= self.grace_period, "max_t", "must be at least grace_period")


@dataclass
class FailureSpec:
    """What a trial survives. A restart resumes from the trial's latest checkpoint (`optim.checkpoint_every`)."""

    max_failures: int = 1
    """Times Ray Train restarts a trial's worker group after a worker process or its node is lost (or any
    error other than a bad config, which fails the trial at once); -1 = without limit."""
    keep_checkpoints: int = 2
    """Latest mid-training checkpoints kept in storage per trial (older ones are deleted)."""

    def check(self) -> None:
        require(self.max_failures >= -1, "max_failures", f"must be >= 0 (or -1: no limit), got {self.max_failures}")
        require(self.keep_checkpoints >= 1, "keep_checkpoints", f"must be at least 1, got {self.keep_checkpoints}")


@dataclass
class ResourcesSpec:
    """What one trial gets: a Ray Train worker group."""

    num_workers: int = 1
    """Data-parallel Ray Train workers."""
    cpus_per_worker: float = 1.0
    """CPUs reserved per worker."""
    gpus_per_worker: float = 0.0
    """GPUs per worker (0 = train on CPU)."""

    def check(self) -> None:
        require(self.num_workers >= 1, "num_workers", f"must be at least 1, got {self.num_workers}")
        require(self.cpus_per_worker > 0, "cpus_per_worker", "must be positive")
        require(self.gpus_per_worker >= 0, "gpus_per_worker", "must be >= 0")


@dataclass
class AblationSpec:
    """A one-factor ablation: a grid over the factor's levels, each run with several seeds."""

    factor: str
    """The space key whose levels are compared."""
    baseline: Any
    """The level every other level is tested against (paired bootstrap on per-utterance errors)."""
    repeats: int = 2
    """Seeds per level."""
    seed_key: str = "seed"
    """Config field that takes the repeat's seed (0, 1, ...)."""

    def check(self) -> None:
        require(self.repeats >= 1, "repeats", f"must be at least 1, got {self.repeats}")


@dataclass
class PresetSpec:
    """Overrides for one preset."""

    config: dict[str, Any] = field(default_factory=dict)
    """Merged over the file's fixed config (model, data, step budget)."""
    space: dict[str, ParamSpec] | None = None
    """Replaces the file's space (e.g. fewer levels for a laptop)."""
    num_samples: int | None = None
    """Replaces num_samples."""
    max_concurrent_trials: int | None = None
    """Replaces max_concurrent_trials."""
    resources: ResourcesSpec | None = None
    """Replaces resources."""
    failure: FailureSpec | None = None
    """Replaces failure (e.g. more restarts on spot GPUs)."""
    searcher: SearcherSpec | None = None
    """Replaces the searcher (e.g. a third objective, peak_vram_mb, where GPU memory is measured)."""
    ablation: AblationSpec | None = None
    """Replaces the ablation (e.g. fewer seeds where a trial takes a quarter of an hour on a laptop)."""


@dataclass
class SweepSpec:
    """A whole search-space file."""

    method: str
    """Method to run (a key of trainables.METHODS)."""
    description: str = ""
    """The question this sweep answers."""
    metric: str = "val_wer"
    """Metric the searcher optimises (single-objective): a validation metric; test metrics are reported only."""
    mode: Literal["min", "max"] = "min"
    """Whether lower or higher `metric` is better."""
    config: dict[str, Any] = field(default_factory=dict)
    """Fixed method config shared by all trials."""
    space: dict[str, ParamSpec] = field(default_factory=dict)
    """Searched parameters by dotted config key."""
    searcher: SearcherSpec = field(default_factory=SearcherSpec)
    """How trials are proposed."""
    scheduler: SchedulerSpec = field(default_factory=SchedulerSpec)
    """Early stopping."""
    num_samples: int = 4
    """Trials to run."""
    max_concurrent_trials: int = 1
    """Trials running at once."""
    resources: ResourcesSpec = field(default_factory=ResourcesSpec)
    """Per-trial resources."""
    failure: FailureSpec = field(default_factory=FailureSpec)
    """Restarts after lost workers and nodes, and checkpoints kept."""
    baseline: bool = True
    """Measure the untuned model's metrics once per sweep (for the report's reference line)."""
    presets: dict[str, PresetSpec] = field(default_factory=dict)
    """local and gpu overrides."""
    ablation: AblationSpec | None = None
    """Makes the sweep a one-factor ablation with repeats and a baseline level (needs searcher grid)."""

    def check(self) -> None:
        if self.ablation is not None:
            require(self.searcher.type == "grid", "searcher.type", "an ablation runs a grid; set searcher.type: grid")
        require(self.method in METHODS, "method", f"unknown method {self.method!r} (known: {', '.join(sorted(METHODS))})")
        require(self.num_samples >= 1, "num_samples", f"must be at least 1, got {self.num_samples}")
        require(self.max_concurrent_trials >= 1, "max_concurrent_trials", "must be at least 1")
        for name in self.presets:
            require(name in PRESETS, f"presets.{name}", f"unknown preset (known: {', '.join(PRESETS)})")
        for name, preset in self.presets.items():
            if preset.num_samples is not None:
                require(preset.num_samples >= 1, f"presets.{name}.num_samples", "must be at least 1")
            if preset.max_concurrent_trials is not None:
                require(preset.max_concurrent_trials >= 1, f"presets.{name}.max_concurrent_trials", "must be at least 1")
            if preset.ablation is not None:
                require((preset.searcher or self.searcher).type == "grid", f"presets.{name}.searcher.type",
                        "an ablation runs a grid; set searcher.type: grid")


@dataclass
class ResolvedSweep:
    """A sweep with its preset applied: everything needed to run it."""

    name: str
    path: Path
    preset: str
    method: str
    description: str
    metric: str
    mode: str
    config: dict[str, Any]
    space: dict[str, ParamSpec]
    searcher: SearcherSpec
    scheduler: SchedulerSpec
    num_samples: int
    max_concurrent_trials: int
    resources: ResourcesSpec
    baseline: bool
    ablation: AblationSpec | None = None
    failure: FailureSpec = field(default_factory=FailureSpec)
    overrides: dict[str, Any] = field(default_factory=dict)
    """The `--set` values, each as its field takes it."""
    rehearsal: str = ""
    """What `--rehearse` swapped for offline stand-ins (platform.rehearsal); empty for a real run."""

    @property
    def objectives(self) -> tuple[list[str], list[str]]:
        if self.searcher.metrics:
            return list(self.searcher.metrics), list(self.searcher.modes or [])
        return [self.metric], [self.mode]

    def grid_size(self) -> int:
        return math.prod(len(p.values or []) for p in self.space.values())

    def trial_config(self, sampled: dict[str, Any]) -> dict[str, Any]:
        return trial_config(self.config, self.space, sampled)


def trial_config(config: dict[str, Any], space: dict[str, ParamSpec], sampled: dict[str, Any]) -> dict[str, Any]:
    """The method config of one trial: the fixed config, each named level's overrides merged in,
    and the other sampled dotted keys set."""
    out = dict(config)
    plain = {}
    for key, value in sampled.items():
        param = space.get(key)
        if param is not None and param.named is not None:
            out = merge(out, param.named[value])
        else:
            plain[key] = value
    return merge(out, unflatten(plain))


def available() -> list[str]:
    return sorted(p.stem for p in SPACES_DIR.glob("*.yaml"))


def find(name: str) -> Path:
    """The file of sweep `name` (or a path to a YAML file)."""
    path = Path(name)
    if path.suffix in (".yaml", ".yml") and path.exists():
        return path
    candidate = SPACES_DIR / f"{name}.yaml"
    if not candidate.exists():
        raise SpaceError(f"unknown sweep {name!r}; there are: {', '.join(available()) or '(none)'}")
    return candidate


def _relative(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def load(path: Path) -> SweepSpec:
    """Parse and validate the file's structure."""
    where = _relative(path)
    try:
        data = read_yaml(path.read_text())
    except (OSError, UnicodeDecodeError) as exc:
        raise SpaceError(f"{where}: cannot read the file ({exc.strerror if isinstance(exc, OSError) else exc})") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f"line {mark.line + 1}" if mark is not None else "YAML"
        raise SpaceError(f"{where}: {at}: not valid YAML ({getattr(exc, 'problem', exc)})") from None
    if not isinstance(data, dict):
        raise SpaceError(f"{where}: the file must be a mapping of sweep fields, got {type(data).__name__}")
    try:
        return build(SweepSpec, data)
    except ConfigError as exc:
        raise SpaceError(f"{where}: {exc}") from None


def resolve(path: Path, preset: str, overrides: dict[str, Any] | None = None,
            rewrite: Callable[[ResolvedSweep], ResolvedSweep] | None = None) -> ResolvedSweep:
    """Apply `preset` and `--set` overrides, then validate the method config of every level: the checks of
    RESOLVE_CHECKS, in order; the first that fails stops the sweep with one line naming the file and field.
    `rewrite` (e.g. `platform.rehearsal.rehearse`) transforms the sweep right after the overrides, before anything
    is checked against it."""
    where = _relative(path)
    spec = load(path)
    if preset not in PRESETS:
        raise SpaceError(f"{where}: --preset: unknown preset {preset!r} (known: {', '.join(PRESETS)})")
    module = load_method(spec.method)
    _thaw_spec(spec, module.CONFIG)
    r = _Resolution.start(path, spec, preset, module, overrides or {})
    checks = list(RESOLVE_CHECKS)
    if rewrite is not None:

        def _rewrite(res: _Resolution) -> None:
            res.sweep = rewrite(res.sweep)

        checks.insert(checks.index(_apply_overrides) + 1, _rewrite)
    try:
        for check in checks:
            check(r)
    except ConfigError as exc:
        raise SpaceError(f"{where}: {exc}") from None
    return r.sweep


@dataclass
class _Resolution:
    """A sweep while `resolve` checks it: the file's spec, the method, the chosen preset, the `--set` values as
    given, and the sweep resolved so far (checks may complete it: typed overrides, an ablation's seeds)."""

    spec: SweepSpec
    module: Any
    preset: str
    chosen: PresetSpec
    given: dict[str, Any]
    at: str
    """Where errors in the space point: `space`, or `presets.NAME.space` when the preset replaces it."""
    sweep: ResolvedSweep

    @classmethod
    def start(cls, path: Path, spec: SweepSpec, preset: str, module: Any, given: dict[str, Any]) -> _Resolution:
        """The file's sweep with the preset's config, space, budget, resources and searcher in place."""
        chosen = spec.presets.get(preset, PresetSpec())
        sweep = ResolvedSweep(
            name=path.stem, path=path, preset=preset, method=spec.method, description=spec.description,
            metric=spec.metric, mode=spec.mode, config=merge(spec.config, chosen.config),
            space=chosen.space if chosen.space is not None else spec.space, searcher=chosen.searcher or spec.searcher,
            scheduler=spec.scheduler, num_samples=chosen.num_samples or spec.num_samples,
            max_concurrent_trials=chosen.max_concurrent_trials or spec.max_concurrent_trials,
            resources=chosen.resources or spec.resources, baseline=spec.baseline, ablation=chosen.ablation or spec.ablation,
            overrides={}, failure=chosen.failure or spec.failure,
        )
        at = f"presets.{preset}.space" if chosen.space is not None else "space"
        return cls(spec, module, preset, chosen, given, at, sweep)


def _apply_overrides(r: _Resolution) -> None:
    """Each `--set` value, typed by its config field, is merged into the config; a searched key cannot be set."""
    for key, value in r.given.items():
        try:
            tp = field_type(r.module.CONFIG, key)
            value = r.sweep.overrides[key] = thaw(value, tp)
            coerced = coerce(value, tp, key)
            r.sweep.config = merge(r.sweep.config, unflatten({key: value if isinstance(value, dict) else coerced}))
        except ConfigError as exc:
            raise ConfigError(f"--set {exc}") from None
        searched = [k for k in flatten(unflatten({key: value})) if k in r.sweep.space]
        require(not searched, f"--set {key}", f"is searched ({r.at}.{searched[0] if searched else key}); "
                "change the space instead")


def _searches_something(r: _Resolution) -> None:
    if not r.sweep.space:
        raise ConfigError(f"{r.at}: the sweep searches nothing; add at least one parameter")


def _ablation_has_seeds(r: _Resolution) -> None:
    """An ablation's factor is a searched list of levels that holds the baseline; its seeds join the space."""
    if r.sweep.ablation is not None:
        r.sweep.space = _with_repeats(r.sweep.space, r.sweep.ablation, r.at)


def _levels_fit_their_fields(r: _Resolution) -> None:
    """Every searched key is a config field (or a named level's label) and each of its levels has the field's type."""
    for key, param in r.sweep.space.items():
        _level_fits_field(r, key, param)


def _level_fits_field(r: _Resolution, key: str, param: ParamSpec) -> None:
    if param.named is not None:
        try:
            field_type(r.module.CONFIG, key)
        except ConfigError:
            return  # a label, checked through its levels' overrides (_every_level_builds_a_config)
        raise ConfigError(f"{r.at}.{key}: named levels need a label that is not a config field")
    try:
        tp = field_type(r.module.CONFIG, key)
    except ConfigError as exc:
        raise ConfigError(f"{r.at}.{exc}") from None
    levels = [coerce(level, tp, f"{r.at}.{key}.values[{i}]" if param.values is not None else f"{r.at}.{key}")
              for i, level in enumerate(param.levels())]
    if param.values is not None:
        require(len({repr(v) for v in levels}) == len(levels), f"{r.at}.{key}.values",
                f"has duplicates once read as the field's type ({levels})")
    if param.type in ("uniform", "loguniform"):
        try:
            coerce(0.5, tp, key)
        except ConfigError:
            raise ConfigError(f"{r.at}.{key}.type: {param.type} samples real numbers, which {key} does not take; "
                              "use int or choice") from None


def _grid_searches_levels(r: _Resolution) -> None:
    """A grid searcher needs a list of levels for every parameter, and runs each combination once (more samples
    would repeat them in Optuna's grid sampler)."""
    if r.spec.searcher.type == "grid":
        for key, param in r.sweep.space.items():
            require(param.type in ("choice", "grid"), f"{r.at}.{key}.type", "a grid searcher needs choice or grid parameters")
        r.sweep.num_samples = min(r.sweep.num_samples, r.sweep.grid_size())


def _grid_parameters_need_grid_searcher(r: _Resolution) -> None:
    for key, param in r.sweep.space.items():
        if param.type == "grid" and r.spec.searcher.type != "grid":
            raise ConfigError(f"{r.at}.{key}.type: grid parameters need searcher.type grid")


def _every_level_builds_a_config(r: _Resolution) -> None:
    """The method's config parses at every extreme level of each parameter (its own checks run here)."""
    _check_levels(r.module, r.sweep, r.at, _origins(r.chosen.config, r.sweep.overrides, r.preset))


def _asha_has_reports_to_compare(r: _Resolution) -> None:
    if r.spec.scheduler.type == "asha":
        every = flatten(r.sweep.config).get("eval.every", 0)
        require(isinstance(every, int) and every > 0, "scheduler.type",
                "asha compares a metric reported during training; set config eval.every (steps between "
                "validations) so trials report val_wer before they end")


def _natural_validation_is_scored(r: _Resolution) -> None:
    """A natural-voice validation metric is scored at a trial's end only, and only where the preset asks for it."""
    natural = [(where, m) for where, m in named_objectives(r.sweep) if m.startswith("natural_val_")]
    if not natural:
        return
    where, metric = natural[0]
    require(where != "scheduler.metric", where, f"{metric} is scored at a trial's end only, so {r.sweep.scheduler.type} "
            "cannot compare trials on it while they train; schedule on val_wer")
    items = flatten(r.sweep.config).get("data.natural_val_items", 0)
    require(isinstance(items, int) and items > 0, where, f"{metric} needs config data.natural_val_items (utterances "
            "of the natural-voice validation split each trial is scored on), e.g. 100")


def _workers_within_method_limit(r: _Resolution) -> None:
    limit, workers = r.module.MAX_WORKERS, r.sweep.resources.num_workers
    if limit is not None and workers > limit:
        origin = f"presets.{r.preset}.resources" if r.chosen.resources is not None else "resources"
        raise ConfigError(f"{origin}.num_workers: method {r.spec.method!r} trains on at most {limit} "
                          f"Ray Train worker(s) per trial, got {workers}")


RESOLVE_CHECKS: list[Callable[[_Resolution], None]] = [
    _apply_overrides,
    _searches_something,
    _ablation_has_seeds,
    _levels_fit_their_fields,
    _grid_searches_levels,
    _grid_parameters_need_grid_searcher,
    _every_level_builds_a_config,
    _asha_has_reports_to_compare,
    _natural_validation_is_scored,
    _workers_within_method_limit,
]
"""What `resolve` checks, in order (each may complete the sweep; the first that fails names the field)."""


def _thaw_spec(spec: SweepSpec, config_cls: type) -> None:
    """Give the file's config values, levels and ablation baseline (read with `read_yaml`) the types of the
    method's config fields: an unquoted `off` is the string "off" where the field takes strings."""

    def thaw_space(space: dict[str, ParamSpec]) -> None:
        for key, param in space.items():
            if param.named is not None:
                param.named = {name: thaw(overrides, config_cls) for name, overrides in param.named.items()}
            elif param.values is not None:
                try:
                    tp = field_type(config_cls, key)
                except ConfigError:
                    tp = Any
                param.values = [thaw(v, tp) for v in param.values]

    def thaw_baseline(ablation: AblationSpec | None, space: dict[str, ParamSpec]) -> None:
        if ablation is None:
            return
        factor = space.get(ablation.factor)
        try:
            tp = str if factor is not None and factor.named is not None else field_type(config_cls, ablation.factor)
        except ConfigError:
            tp = Any
        ablation.baseline = thaw(ablation.baseline, tp)

    spec.config = thaw(spec.config, config_cls)
    thaw_space(spec.space)
    thaw_baseline(spec.ablation, spec.space)
    for preset in spec.presets.values():
        preset.config = thaw(preset.config, config_cls)
        if preset.space is not None:
            thaw_space(preset.space)
        thaw_baseline(preset.ablation, preset.space if preset.space is not None else spec.space)


def is_test_metric(name: str) -> bool:
    """Whether `name` is scored on a test set (the espeak test split, the natural-voice test set, another named
    test condition): what a trial reports, never what a search should select on."""
    return name in ("wer", "cer") or name.startswith(("wer_", "cer_", "natural_wer", "natural_cer"))


def named_objectives(sweep: ResolvedSweep) -> list[tuple[str, str]]:
    """(the field naming it, metric) for each objective of the searcher and of the scheduler, if there is one."""
    named = [("metric" if not sweep.searcher.metrics else "searcher.metrics", m) for m in sweep.objectives[0]]
    if sweep.scheduler.type != "none":
        named.append(("scheduler.metric", sweep.scheduler.metric))
    return named


def objective_warnings(sweep: ResolvedSweep) -> list[str]:
    """One line for each objective of the searcher or the scheduler that is a test metric."""
    named = named_objectives(sweep)
    out = [f"warning: {_relative(sweep.path)}: {where}: {metric!r} is a test metric; the search will select on the "
           f"test set, which makes its best trial look better than it is (select on val_wer, report {metric})"
           for where, metric in named if is_test_metric(metric)]
    language = _data_language(sweep)
    if language is not None and headline(language) == "cer":
        out += [f"warning: {_relative(sweep.path)}: {where}: {metric!r} in {language}, which is written without spaces "
                f"between words, counts whole sentences as words; select on {metric[:-3]}cer"
                for where, metric in named if metric.endswith("wer")]
    return out


def level_samples(sweep: ResolvedSweep, limit: int = 64) -> list[dict[str, Any]]:
    """Searched values that reach every level of each parameter: all at their first level, then each parameter's
    other levels one at a time (at most `limit`), for checks before any trial runs."""
    first = {k: p.levels()[0] for k, p in sweep.space.items()}
    return list(itertools.islice(
        [first] + [{**first, k: v} for k, p in sweep.space.items() for v in p.levels()[1:]], limit))


def _data_language(sweep: ResolvedSweep) -> str | None:
    """The language (data.language) of the sweep's first trial, where its method has one."""
    data = getattr(load_method(sweep.method).parse_config(sweep.trial_config(level_samples(sweep)[0])), "data", None)
    language = getattr(data, "language", None)
    return language_code(language, "data.language") if isinstance(language, str) else None


def check_data(sweep: ResolvedSweep) -> list[str]:
    """Scan every local data folder or data set the sweep's trials would read, on the driver, before any trial
    starts.

    Unreadable or missing audio and audio files without a transcript stop the sweep with one line naming the first
    few and the count (SpaceError), unless the config says `data.on_bad: skip`: then the returned warnings give
    the count (the trials leave those files out)."""
    from trainables.blocks.data import scan_source

    module = load_method(sweep.method)
    warnings: list[str] = []
    seen: set[tuple[str, str]] = set()
    for sampled in level_samples(sweep):
        data = getattr(module.parse_config(sweep.trial_config(sampled)), "data", None)
        source, on_bad = getattr(data, "source", None), getattr(data, "on_bad", "error")
        if not isinstance(source, str) or (source, on_bad) in seen:
            continue
        seen.add((source, on_bad))
        try:
            scan = scan_source(data)
        except ValueError:
            continue  # the config's own check names it
        if scan is None or not scan.bad:
            continue
        if on_bad == "skip":
            warnings.append(f"warning: data.source: {scan.summary()}; skipping them (data.on_bad: skip)")
        else:
            raise SpaceError(f"{_relative(sweep.path)}: data.source: {scan.summary()}; fix or remove them, "
                             "or set data.on_bad: skip")
    return warnings


def _with_repeats(space: dict[str, ParamSpec], ablation: AblationSpec, at: str) -> dict[str, ParamSpec]:
    """The ablation's space: its factor, plus the seed as a grid dimension of `repeats` values."""
    require(ablation.factor in space, "ablation.factor", f"{ablation.factor!r} is not in {at} ({', '.join(space)})")
    factor = space[ablation.factor]
    require(factor.type in ("choice", "grid"), "ablation.factor", "the factor must have a list of levels")
    require(any(v == ablation.baseline for v in factor.values or []), "ablation.baseline",
            f"{ablation.baseline!r} is not a level of {ablation.factor} ({', '.join(map(str, factor.values or []))})")
    require(ablation.seed_key not in space, "ablation.seed_key", f"{ablation.seed_key} is searched already")
    return {**space, ablation.seed_key: ParamSpec(type="grid", values=list(range(ablation.repeats)))}


def _origins(preset_config: dict[str, Any], overrides: dict[str, Any], preset: str) -> list[tuple[str, str]]:
    """(dotted key, where it was set) for the values that did not come from the file's own config."""
    return ([(k, "--set ") for k in overrides]
            + [(k, f"presets.{preset}.config.") for k in flatten(preset_config)])


def _check_levels(module: Any, sweep: ResolvedSweep, at: str = "space",
                  origins: list[tuple[str, str]] | None = None) -> None:
    """Build the method config at every extreme level of each parameter: the trial configs' checks run here.

    Errors name the field where the file (or --set) gives the value: `at` for searched keys, else the
    first of `origins` that sets the field, else `config.`."""
    for sampled in level_samples(sweep):
        try:
            module.parse_config(sweep.trial_config(sampled))
        except ConfigError as exc:
            message = str(exc)
            field_name = message.split(":", 1)[0].split("[", 1)[0]
            for key, value in sampled.items():
                named = sweep.space[key].named
                if named is not None and any(k == field_name or field_name.startswith(k + ".")
                                             for k in flatten(named[value])):
                    raise ConfigError(f"{at}.{key}.named.{value}.{message}") from None
            if field_name in sweep.space:
                raise ConfigError(f"{at}.{message} (level {sampled[field_name]!r})") from None
            prefix = next((p for k, p in origins or [] if k == field_name or k.startswith(field_name + ".")
                           or field_name.startswith(k + ".")), "config.")
            raise ConfigError(f"{prefix}{message}") from None
