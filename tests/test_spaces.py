"""Search-space validation: every malformed file gives one line naming the file and the field, exit 2, no Ray.

Each case starts from a valid minimal qlora sweep (`BASE`), breaks one thing, and runs
`platform.sweep.main` in-process; a few also run without --dry-run, where Ray must still never start.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import ray

from platform import cluster, spaces, sweep

ROOT = Path(__file__).resolve().parents[1]

BASE = """\
method: qlora
config:
  model: whisper-tiny.en
  data: {source: espeak-smoke}
space:
  lora.r: {type: choice, values: [2, 4]}
"""
R_PARAM = "lora.r: {type: choice, values: [2, 4]}"


def with_param(param: str) -> str:
    """BASE with its one searched parameter replaced."""
    return BASE.replace(R_PARAM, param)


# (case id, file text, what the one-line error must contain besides the file's path)
MALFORMED: list[tuple[str, str, list[str]]] = [
    ("invalid-yaml", BASE + "searcher: {type: tpe\n", ["line 8", "not valid YAML"]),
    ("tab-in-yaml", BASE + "\tsearcher: x\n", ["line 7", "not valid YAML"]),
    ("top-level-list", "- method\n- qlora\n", ["must be a mapping"]),
    ("empty-file", "", ["must be a mapping"]),
    ("missing-method", BASE.replace("method: qlora\n", ""), ["method: required field missing"]),
    ("unknown-method", BASE.replace("method: qlora", "method: lorax"), ["method:", "'lorax'", "qlora"]),
    ("unknown-top-key", BASE + "num_sample: 4\n", ["num_sample: unknown key", "num_samples"]),
    ("num-samples-zero", BASE + "num_samples: 0\n", ["num_samples:", "at least 1"]),
    ("preset-ablation-not-grid", BASE + "presets:\n  local:\n    ablation: {factor: lora.r, baseline: 2}\n",
     ["presets.local.searcher.type:", "grid"]),
    ("num-samples-word", BASE + "num_samples: four\n", ["num_samples:", "integer", "'four'"]),
    ("max-concurrent-negative", BASE + "max_concurrent_trials: -1\n", ["max_concurrent_trials:"]),
    ("mode-misspelt", BASE + "mode: minimise\n", ["mode:", "'minimise'"]),
    ("space-empty", BASE.replace("\n  " + R_PARAM, " {}"), ["space:", "searches nothing"]),
    ("space-null", BASE.replace("\n  " + R_PARAM, ""), ["space:", "expected a mapping"]),
    ("param-unknown-type", BASE.replace("type: choice", "type: normal"), ["space.lora.r.type:", "'normal'"]),
    ("param-missing-type", with_param("lora.r: {values: [2, 4]}"), ["space.lora.r.type: required field missing"]),
    ("param-not-a-mapping", with_param("lora.r: [2, 4]"), ["space.lora.r:", "ParamSpec"]),
    ("choice-without-values", with_param("lora.r: {type: choice}"), ["space.lora.r.values:", "non-empty"]),
    ("choice-duplicates", BASE.replace("[2, 4]", "[2, 2]"), ["space.lora.r.values:", "duplicates"]),
    ("choice-duplicates-after-coercion", BASE.replace("[2, 4]", "[2, 2.0]"), ["space.lora.r.values:", "duplicates"]),
    ("choice-values-not-list", BASE.replace("[2, 4]", "4"), ["space.lora.r.values:", "expected a list"]),
    ("choice-with-low", with_param("lora.r: {type: choice, values: [2, 4], low: 1}"), ["space.lora.r.low:"]),
    ("uniform-low-above-high", with_param("lora.dropout: {type: uniform, low: 0.5, high: 0.1}"),
     ["space.lora.dropout.high:", "greater than low"]),
    ("uniform-low-equals-high", with_param("lora.dropout: {type: uniform, low: 0.1, high: 0.1}"),
     ["space.lora.dropout.high:"]),
    ("uniform-without-high", with_param("lora.dropout: {type: uniform, low: 0.1}"), ["space.lora.dropout.low:"]),
    ("uniform-with-values", with_param("lora.dropout: {type: uniform, values: [0.1]}"), ["space.lora.dropout.values:"]),
    ("uniform-bound-not-number", with_param("lora.dropout: {type: uniform, low: a, high: 0.1}"),
     ["space.lora.dropout.low:", "expected a number"]),
    ("uniform-bound-infinite", with_param("optim.lr: {type: loguniform, low: 1e-5, high: .inf}"),
     ["space.optim.lr.high:", "finite"]),
    ("uniform-on-int-field", with_param("lora.r: {type: uniform, low: 1, high: 8}"),
     ["space.lora.r.type:", "int or choice"]),
    ("loguniform-low-zero", with_param("optim.lr: {type: loguniform, low: 0, high: 0.1}"),
     ["space.optim.lr.low:", "low > 0"]),
    ("int-log-low-zero", with_param("lora.r: {type: int, low: 0, high: 8, log: true}"), ["space.lora.r.low:"]),
    ("int-non-integer-bounds", with_param("lora.r: {type: int, low: 1.5, high: 8}"),
     ["space.lora.r.low:", "integers"]),
    ("searched-key-not-a-field", BASE.replace("lora.r:", "lora.rank:"), ["space.lora.rank:", "unknown key", "r"]),
    ("searched-key-below-a-value", BASE.replace("lora.r:", "lora.r.x:"), ["space.lora.r.x:"]),
    ("searched-value-wrong-type", BASE.replace("[2, 4]", "[big]"), ["space.lora.r.values[0]:", "'big'"]),
    ("searched-value-out-of-range", BASE.replace("[2, 4]", "[0, 4]"), ["space.lora.r:", "level 0"]),
    ("searched-int-out-of-range", with_param("optim.max_steps: {type: int, low: -1, high: 4}"),
     ["space.optim.max_steps:", "level -1"]),
    ("grid-param-with-tpe", BASE.replace("type: choice", "type: grid") + "searcher: {type: tpe}\n",
     ["space.lora.r.type:", "searcher.type grid"]),
    ("grid-searcher-with-uniform", with_param("lora.dropout: {type: uniform, low: 0.0, high: 0.1}")
     + "searcher: {type: grid}\n", ["space.lora.dropout.type:", "grid searcher"]),
    ("searcher-unknown", BASE + "searcher: {type: bayes}\n", ["searcher.type:", "'bayes'"]),
    ("searcher-null", BASE + "searcher:\n", ["searcher:", "SearcherSpec"]),
    ("nsga2-one-metric", BASE + "searcher: {type: nsga2, metrics: [wer], modes: [min]}\n",
     ["searcher.metrics:", "two or more"]),
    ("modes-length-mismatch", BASE + "searcher: {type: nsga2, metrics: [wer, model_size_mb], modes: [min]}\n",
     ["searcher.modes:", "one mode"]),
    ("mode-item-unknown", BASE + "searcher: {type: nsga2, metrics: [wer, cer], modes: [min, up]}\n",
     ["searcher.modes[1]:", "'up'"]),
    ("scheduler-unknown", BASE + "scheduler: {type: hyperband}\n", ["scheduler.type:", "'hyperband'"]),
    ("asha-grace-zero", BASE + "scheduler: {type: asha, grace_period: 0}\n", ["scheduler.grace_period:"]),
    ("asha-max-t-below-grace", BASE + "scheduler: {type: asha, grace_period: 5, max_t: 2}\n", ["scheduler.max_t:"]),
    ("asha-without-eval-every", BASE + "scheduler: {type: asha}\n", ["scheduler.type:", "eval.every"]),
    ("natural-val-not-scored", BASE + "metric: natural_val_wer\n", ["metric:", "data.natural_val_items"]),
    ("natural-val-scheduled", BASE.replace("data: {source: espeak-smoke}", "data: {source: espeak-smoke, natural_val_items: "
     "8}\n  eval: {every: 5}") + "scheduler: {type: asha, metric: natural_val_wer}\n", ["scheduler.metric:", "end only"]),
    ("natural-val-without-natural-voice", BASE.replace("{source: espeak-smoke}", "{source: espeak-multilingual, "
     "natural_val_items: 8}"), ["config.data.natural_val_items:", "no natural-voice set"]),
    ("failure-below-minus-one", BASE + "failure: {max_failures: -2}\n", ["failure.max_failures:", "-1"]),
    ("failure-keep-zero", BASE + "failure: {keep_checkpoints: 0}\n", ["failure.keep_checkpoints:", "at least 1"]),
    ("preset-failure-unknown-field", BASE + "presets:\n  local:\n    failure: {retries: 2}\n",
     ["presets.local.failure.retries:"]),
    ("checkpoint-every-negative", BASE.replace("model: whisper-tiny.en", "model: whisper-tiny.en\n  optim: {checkpoint_every: -1}"),
     ["config.optim.checkpoint_every:", ">= 0"]),
    ("nsga2-population-one", BASE + "searcher: {type: nsga2, metrics: [wer, model_size_mb], modes: [min, min], "
     "population_size: 1}\n", ["searcher.population_size:", "at least 2"]),
    ("workers-zero", BASE + "resources: {num_workers: 0}\n", ["resources.num_workers:", "at least 1"]),
    ("cpus-zero", BASE + "resources: {cpus_per_worker: 0}\n", ["resources.cpus_per_worker:"]),
    ("baseline-not-bool", BASE + "baseline: yes please\n", ["baseline:", "true or false"]),
    ("preset-unknown", BASE + "presets:\n  cloud: {num_samples: 2}\n", ["presets.cloud:", "local, gpu"]),
    ("preset-unknown-field", BASE + "presets:\n  local:\n    conifg: {model: x}\n", ["presets.local.conifg:"]),
    ("preset-unknown-config-key", BASE + "presets:\n  local:\n    config: {modle: x}\n",
     ["presets.local.config.modle:", "unknown key"]),
    ("preset-nested-config-key", BASE + "presets:\n  local:\n    config: {lora: {rnk: 3}}\n",
     ["presets.local.config.lora.rnk:"]),
    ("preset-bad-config-value", BASE + "presets:\n  local:\n    config: {precision: {bits: 3}}\n",
     ["presets.local.config.precision.bits:"]),
    ("preset-num-samples-zero", BASE + "presets:\n  local: {num_samples: 0}\n", ["presets.local.num_samples:"]),
    ("preset-resources", BASE + "presets:\n  local:\n    resources: {num_workers: 0}\n",
     ["presets.local.resources.num_workers:"]),
    ("preset-space-out-of-range", BASE + "presets:\n  local:\n    space: {lora.r: {type: choice, values: [0, 4]}}\n",
     ["presets.local.space.lora.r:", "level 0"]),
    ("preset-space-empty", BASE + "presets:\n  local:\n    space: {}\n", ["presets.local.space:", "searches nothing"]),
    ("config-not-mapping", BASE.replace("config:\n  model: whisper-tiny.en\n  data: {source: espeak-smoke}",
                                        "config: [1]"), ["config:", "expected a mapping"]),
    ("config-unknown-key", BASE.replace("model: whisper-tiny.en", "model: whisper-tiny.en\n  lora: {rnk: 2}"),
     ["lora.rnk:", "unknown key"]),
    ("config-bad-value", BASE.replace("model: whisper-tiny.en", "model: whisper-tiny.en\n  precision: {bits: 3}"),
     ["config.precision.bits:", "3 is not supported"]),
    ("data-folder-missing", BASE.replace("espeak-smoke", "./no/such/folder"), ["config.data.source:", "does not exist"]),
    ("data-hub-offline", BASE.replace("espeak-smoke", "google/fleurs"), ["config.data.source:", "espeak-general"]),
    ("model-is-a-corpus", BASE.replace("model: whisper-tiny.en", "model: espeak-general"),
     ["config.model:", "not a model"]),
    ("model-hub-offline", BASE.replace("whisper-tiny.en", "openai/whisper-small"),
     ["config.model:", "offline", "'whisper-tiny.en'"]),
]

# Cases that also run without --dry-run: the error must still come before Ray starts.
# They break the file's own fields (not a preset's), so whichever preset the machine picks, the file is wrong.
FULL_RUN = {"invalid-yaml", "unknown-method", "searched-value-out-of-range", "config-bad-value", "model-hub-offline"}


def one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: "), err
    return lines[0]


@pytest.fixture(autouse=True)
def _no_ray_cluster(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without --dry-run, main() joins a running cluster (RAY_ADDRESS, `ray start`) to pick the preset; here
    there is none, so Ray would only start when the sweep runs, after validation."""
    monkeypatch.setattr(cluster, "running_cluster", lambda: False)
    assert not ray.is_initialized()


def test_enough_distinct_cases() -> None:
    assert len({case for case, _, _ in MALFORMED}) == len(MALFORMED) >= 22
    assert len({text for _, text, _ in MALFORMED}) == len(MALFORMED)


def test_base_is_valid(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "base.yaml"
    path.write_text(BASE)
    assert sweep.main([str(path), "--dry-run"]) == 0
    assert "lora.r" in capsys.readouterr().out


@pytest.mark.parametrize(("case", "text", "expected"), MALFORMED, ids=[c for c, _, _ in MALFORMED])
def test_malformed_file(case: str, text: str, expected: list[str], tmp_path: Path,
                        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / f"{case}.yaml"
    path.write_text(text)
    if case in FULL_RUN:  # were the file accepted, fail at once instead of running a sweep
        import platform.runner

        monkeypatch.setattr(platform.runner, "run_sweep", lambda *a, **k: pytest.fail("the sweep ran"))
    for argv in ([str(path), "--dry-run"], [str(path)]) if case in FULL_RUN else ([str(path), "--dry-run"],):
        assert sweep.main(argv) == 2, argv
        line = one_error_line(capsys)
        assert str(path) in line, line
        for part in expected:
            assert part in line, (part, line)
        assert not ray.is_initialized()


def test_unreadable_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"method: \xff\xfe qlora\n")
    folder = tmp_path / "folder.yaml"
    folder.mkdir()
    for path in (binary, folder):
        assert sweep.main([str(path), "--dry-run"]) == 2
        line = one_error_line(capsys)
        assert str(path) in line and "cannot read" in line, line


def test_scientific_notation_without_dot_is_a_number(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """YAML 1.1 reads `1e-5` as a string; float fields take it anyway (in files and in --set)."""
    path = tmp_path / "lr.yaml"
    path.write_text(with_param("optim.lr: {type: loguniform, low: 1e-5, high: 1e-2}"))
    assert sweep.main([str(path), "--dry-run", "--set", "optim.warmup_steps=0", "--set", "lora.alpha=1e1"]) == 0
    out = capsys.readouterr().out
    assert '"low": 1e-05' in out and "alpha: 10.0" in out, out


# ---------------------------------------------------------------------------------------------
# The CLI around the file
# ---------------------------------------------------------------------------------------------


def test_list(capsys: pytest.CaptureFixture[str]) -> None:
    assert sweep.main(["--list"]) == 0
    assert "qlora_rank" in capsys.readouterr().out


def test_unknown_sweep_name(capsys: pytest.CaptureFixture[str]) -> None:
    assert sweep.main(["no_such_sweep", "--dry-run"]) == 2
    line = one_error_line(capsys)
    assert "no_such_sweep" in line and "qlora_rank" in line, line


def test_no_sweep_name(capsys: pytest.CaptureFixture[str]) -> None:
    assert sweep.main([]) == 2
    assert "qlora_rank" in one_error_line(capsys)


BAD_FLAGS: list[tuple[list[str], list[str]]] = [
    (["--set", "optim.max_steps=abc"], ["--set optim.max_steps:", "integer"]),
    (["--set", "optim.max_steps=-1"], ["--set optim.max_steps:", ">= 0"]),
    (["--set", "nosuch.key=1"], ["--set nosuch.key:", "unknown key"]),
    (["--set", "lora.r.x=1"], ["--set lora.r.x:"]),
    (["--set", "optim.max_steps"], ["--set 'optim.max_steps'", "KEY=VALUE"]),
    (["--set", "=3"], ["--set '=3'", "KEY=VALUE"]),
    (["--set", "optim.max_steps=["], ["--set optim.max_steps:", "not valid YAML"]),
    (["--set", "lora.r=3"], ["--set lora.r:", "searched", "presets.local.space.lora.r"]),
    (["--set", "lora={r: 3}"], ["--set lora:", "searched"]),
    (["--num-samples", "0"], ["--num-samples:", "at least 1"]),
    (["--max-concurrent", "0"], ["--max-concurrent:", "at least 1"]),
]


@pytest.mark.parametrize(("argv", "expected"), BAD_FLAGS, ids=[" ".join(a) for a, _ in BAD_FLAGS])
def test_bad_flags(argv: list[str], expected: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert sweep.main(["qlora_rank", "--dry-run", *argv]) == 2
    line = one_error_line(capsys)
    for part in expected:
        assert part in line, (part, line)
    assert not ray.is_initialized()


def test_set_section_merges(capsys: pytest.CaptureFixture[str]) -> None:
    """--set of a whole section merges into it (other keys kept) and the plan stays printable."""
    assert sweep.main(["qlora_rank", "--dry-run", "--set", "lora={dropout: 0.2}", "--set", "optim.lr=1e-4"]) == 0
    out = capsys.readouterr().out
    assert "dropout: 0.2" in out and "- fc2" in out and "lr: 0.0001" in out, out


def test_dry_run_of_qlora_rank_prints_the_plan(capsys: pytest.CaptureFixture[str]) -> None:
    assert sweep.main(["qlora_rank", "--dry-run"]) == 0
    captured = capsys.readouterr()
    assert captured.err == ""
    out = captured.out
    assert "preset    local" in out
    assert "searcher  optuna grid" in out
    assert 'lora.r: {"type": "grid", "values": [1, 4, 16, 64]}' in out
    assert "resources 1 Ray Train worker(s) x 2 CPU + 0 GPU" in out
    assert "trials    4, 1 at a time" in out
    assert "model: whisper-tiny.en" in out
    assert not ray.is_initialized()


def test_dry_run_gpu_preset_offline(capsys: pytest.CaptureFixture[str]) -> None:
    assert os.environ.get("HF_HUB_OFFLINE") == "1"
    assert sweep.main(["qlora_rank", "--dry-run", "--preset", "gpu"]) == 2
    line = one_error_line(capsys)
    assert "search_spaces/qlora_rank.yaml" in line and "config.model" in line, line
    assert "openai/whisper-small" in line and "'whisper-tiny.en'" in line, line


@pytest.mark.parametrize("name", spaces.available())
def test_every_shipped_preset_resolves_where_the_hub_is_reachable(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Offline, a gpu preset stops at its first hub name; with the hub taken as reachable, every preset of
    every shipped sweep must pass the whole validation (adaptor_phases' gpu preset once asked for a warm-up
    longer than its levels' 60 steps)."""
    import trainables.blocks.data

    monkeypatch.setattr(trainables.blocks.data, "_offline_reason", lambda: None)
    for preset in ("local", "gpu"):
        resolved = spaces.resolve(spaces.find(name), preset)
        assert resolved.num_samples >= 1 and resolved.preset == preset
        # Validation selects, test reports: the searcher's and the scheduler's metrics are validation metrics.
        metrics, _ = resolved.objectives
        # (espeak-ng validation, or the natural-voice validation split where the preset scores it)
        assert metrics[0].startswith(("val_", "natural_val_")) and not any(spaces.is_test_metric(m) for m in metrics), metrics
        assert resolved.scheduler.type == "none" or not spaces.is_test_metric(resolved.scheduler.metric)
        assert spaces.objective_warnings(resolved) == []


def test_real_entry_point(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(BASE + "num_sample: 4\n")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    env.pop("RAY_ADDRESS", None)
    python = ROOT / ".venv" / "bin" / "python"
    out = subprocess.run([str(python if python.exists() else sys.executable), "-m", "platform.sweep", str(path),
                          "--dry-run"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2, out.stdout + out.stderr
    assert out.stdout == ""
    lines = out.stderr.splitlines()
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith("error: ") and str(path) in lines[0] and "num_sample: unknown key" in lines[0]


# ---------------------------------------------------------------------------------------------
# Good input is not refused: string fields get the text the user wrote, through --set and the file
# ---------------------------------------------------------------------------------------------


def _literal_fields(cls: type, prefix: str = "") -> list[tuple[str, tuple]]:
    """(dotted key, allowed values) of every Literal field of a config dataclass, nested ones included."""
    import dataclasses
    import types
    import typing

    out = []
    for name, tp in typing.get_type_hints(cls).items():
        key = f"{prefix}{name}"
        options = typing.get_args(tp) if typing.get_origin(tp) in (typing.Union, types.UnionType) else (tp,)
        for option in options:
            if typing.get_origin(option) is typing.Literal:
                out.append((key, typing.get_args(option)))
            elif dataclasses.is_dataclass(option):
                out += _literal_fields(option, key + ".")
    return out


def _sweep_of(method: str) -> Path | None:
    from platform import spaces

    return next((spaces.find(n) for n in spaces.available() if spaces.load(spaces.find(n)).method == method), None)


@pytest.mark.parametrize("method", sorted(__import__("trainables").METHODS))
def test_every_literal_value_of_every_method_passes_set(method: str) -> None:
    """`--set KEY=VALUE` for every value of every Literal field reaches the field exactly as written
    (`off` is not False, `16` of a Literal of ints is 16); only a check relating two fields may refuse it."""
    from platform import spaces
    from trainables import load_method
    from trainables.blocks.config import coerce, field_type, flatten, thaw

    path = _sweep_of(method)
    try:
        if path is not None:
            spaces.resolve(path, "local")
    except spaces.SpaceError:
        path = None  # a sweep file being written (its own errors are another test's): check the values alone
    config_cls = load_method(method).CONFIG
    fields = _literal_fields(config_cls)
    assert fields, method
    reached = 0
    for key, allowed in fields:
        for value in allowed:
            if path is None:  # a method with no sweep file yet: the --set value as resolve types it
                tp = field_type(config_cls, key)
                got = coerce(thaw(sweep.parse_sets([f"{key}={value}"])[key], tp), tp, key)
                assert got == value and type(got) is type(value), (key, value, got)
                reached += 1
                continue
            try:
                resolved = spaces.resolve(path, "local", sweep.parse_sets([f"{key}={value}"]))
            except spaces.SpaceError as exc:
                # A value may clash with another field (a check across fields); never with its own type.
                message = str(exc).split(": ", 1)[1]
                assert not (message.startswith(f"--set {key}:") and ("is not one of" in message or "expected" in message)), \
                    (key, value, str(exc))
                continue
            got = flatten(resolved.config)[key]
            assert got == value and type(got) is type(value), (key, value, got)
            reached += 1
    assert reached >= len(fields), (method, reached, len(fields))


def test_set_autocast_off_reaches_the_field(capsys: pytest.CaptureFixture[str]) -> None:
    assert sweep.main(["qlora_rank", "--dry-run", "--set", "optim.autocast=off"]) == 0
    assert "autocast: 'off'" in capsys.readouterr().out


def test_yaml_strings_that_look_like_bools_nulls_or_numbers(tmp_path: Path) -> None:
    """In a file too, unquoted `off`/`on`/`yes`/`no`/`null`/numbers reach a string field as written, and a bool
    or number field still gets YAML's value."""
    from platform import spaces
    from trainables.blocks.config import flatten

    path = tmp_path / "strings.yaml"
    path.write_text(BASE.replace("data: {source: espeak-smoke}",
                                 "data: {source: espeak-smoke, hub_config: 2024, train_split: train}\n"
                                 "  optim: {autocast: off}\n  precision: {double_quant: no}"))
    resolved = spaces.resolve(path, "local", sweep.parse_sets(["eval.every=2", "data.val_split=null"]))
    config = flatten(resolved.config)
    assert config["optim.autocast"] == "off"
    assert config["data.hub_config"] == "2024"  # a name that looks like a number
    assert config["precision.double_quant"] is False  # a bool field still reads `no` as false
    assert config["eval.every"] == 2
    assert config["data.val_split"] == "null"  # a str field, not optional: the text
    assert resolved.space["lora.r"].values == [2, 4]
    for text in ("on", "yes", "no", "off", "007", "1.10", "true"):
        got = flatten(spaces.resolve(path, "local", sweep.parse_sets([f"data.hub_config={text}"])).config)
        assert got["data.hub_config"] == text, (text, got["data.hub_config"])
    for text in ("~", "null"):
        got = flatten(spaces.resolve(path, "local", sweep.parse_sets([f"data.hub_config={text}"])).config)
        assert got["data.hub_config"] is None  # an optional field: null means none


def test_the_plan_says_how_many_nsga2_generations_the_trials_make(capsys: pytest.CaptureFixture[str]) -> None:
    assert sweep.main(["qlora_pareto", "--dry-run"]) == 0  # local: 8 trials, population 4
    assert "searcher  optuna nsga2 (seed 0), population 4: 2 generations, the first at random" in capsys.readouterr().out
    assert sweep.main(["qlora_pareto", "--dry-run", "--num-samples", "3"]) == 0
    assert "population 4: 1 generation, sampled at random (a random search)" in capsys.readouterr().out


def test_the_plan_says_which_ray_the_sweep_runs_on(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A cluster another job started on this machine is joined unasked: the plan says so, and how not to."""
    from platform import cluster

    monkeypatch.setenv("RAY_ADDRESS", "")
    assert cluster.plan_line() == "a private Ray on this machine (RAY_ADDRESS is empty)"
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.5:6379")
    assert cluster.plan_line() == "the cluster at 10.0.0.5:6379 (RAY_ADDRESS)"
    monkeypatch.delenv("RAY_ADDRESS")
    marker = tmp_path / "ray_current_cluster"
    marker.write_text("192.0.2.2:40879\n")
    real_path = cluster.Path
    monkeypatch.setattr(cluster, "Path", lambda p: marker if p == "/tmp/ray/ray_current_cluster" else real_path(p))
    assert cluster.plan_line() == ("joins the cluster started on this machine at 192.0.2.2:40879 (ray start); "
                                   "RAY_ADDRESS= runs on a private one instead")
    marker.unlink()
    assert cluster.plan_line() == "a private Ray on this machine"


def test_a_level_too_short_for_adalora_is_refused_before_any_trial() -> None:
    """entropy_allocation's AdaLoRA level needs 3 steps to warm up, prune and finish: with fewer, resolving the sweep
    fails in one line naming the file and the field, not the level's trial once the sweep runs."""
    from platform import spaces

    with pytest.raises(spaces.SpaceError, match=r"^search_spaces/entropy_allocation.yaml: .*lora.kind: AdaLoRA needs at "
                                                r"least 3 training steps .*got 2$"):
        spaces.resolve(spaces.find("entropy_allocation"), "local", {"optim.max_steps": 2, "optim.warmup_steps": 0})
    assert spaces.resolve(spaces.find("entropy_allocation"), "local", {"optim.max_steps": 3, "optim.warmup_steps": 0}).num_samples >= 1


def test_a_preset_replaces_the_ablation_with_its_own_seeds_and_baseline(tmp_path: Path) -> None:
    """A laptop preset may run fewer seeds, or other levels, than the file's ablation; the other preset keeps it."""
    path = tmp_path / "ablation.yaml"
    path.write_text(BASE.replace(R_PARAM, "lora.r: {type: grid, values: [2, 4]}")
                    + "searcher: {type: grid}\nablation: {factor: lora.r, baseline: 4, repeats: 3}\n"
                    + "presets:\n  local:\n    space: {lora.r: {type: grid, values: [2, 8]}}\n"
                    + "    ablation: {factor: lora.r, baseline: 8, repeats: 1}\n")
    local, gpu = spaces.resolve(path, "local"), spaces.resolve(path, "gpu")
    assert local.ablation is not None and (local.ablation.baseline, local.ablation.repeats) == (8, 1)
    assert local.space["seed"].values == [0] and local.grid_size() == 2
    assert gpu.ablation is not None and (gpu.ablation.baseline, gpu.ablation.repeats) == (4, 3)
    assert gpu.space["seed"].values == [0, 1, 2] and gpu.grid_size() == 6
    path.write_text(path.read_text().replace("baseline: 8", "baseline: 4"))
    with pytest.raises(spaces.SpaceError, match=r"ablation\.baseline.*4 is not a level of lora\.r \(2, 8\)"):
        spaces.resolve(path, "local")
