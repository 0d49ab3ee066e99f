"""The untuned-model baseline cache (platform/baselines.py): its key, reading back, misses, --fresh-baseline, and
what the plan and the runner say about it. Fast: no Ray, no training (`measure` is a plain function)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import ray

from platform import baselines, runner, spaces, sweep
from trainables import load_method
from trainables.assets.cache import CACHE_ENV

VERSIONS = {"torch": "2.5.1", "transformers": "4.46.0", "peft": "0.13.2", "bitsandbytes": "0.44.1"}
CONFIG = {
    "model": "whisper-tiny.en",
    "data": {"source": "espeak-general", "max_eval_items": 100},
    "eval": {"max_new_tokens": 96, "batch_size": 16},
    "precision": {"bits": 4, "quant_type": "nf4"},
}


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "cache"
    monkeypatch.setenv(CACHE_ENV, str(root))
    return root


def inputs(config: dict[str, Any] = CONFIG, *, code: str = "code-a", versions: dict[str, str] = VERSIONS,
           device: str = "cpu", num_workers: int = 1) -> dict[str, Any]:
    """What the runner keys a qlora baseline on: the method's own baseline config of `config`."""
    return baselines.baseline_inputs("qlora", load_method("qlora").baseline_config(config), device=device,
                                     num_workers=num_workers, code=code, versions=versions)


def with_value(config: dict[str, Any], section: str, key: str, value: Any) -> dict[str, Any]:
    return {**config, section: {**config[section], key: value}}


class Measure:
    """A plain measurement: returns fixed metrics and counts its calls."""

    def __init__(self, wer: float) -> None:
        self.wer, self.calls = wer, 0

    def __call__(self) -> dict[str, float]:
        self.calls += 1
        return {"wer": self.wer, "cer": self.wer / 2}


# ------------------------------------------------------------------------------------------------- the key


def test_the_key_changes_with_each_input_that_decides_the_baseline(cache: Path) -> None:
    base = baselines.cache_path(inputs())
    changed = {
        "model": inputs({**CONFIG, "model": "whisper-base"}),
        "data": inputs(with_value(CONFIG, "data", "source", "espeak-clinical")),
        "data size": inputs(with_value(CONFIG, "data", "max_eval_items", 50)),
        "eval config": inputs(with_value(CONFIG, "eval", "max_new_tokens", 32)),
        "code": inputs(code="code-b"),
        "torch": inputs(versions={**VERSIONS, "torch": "2.6.0"}),
        "bitsandbytes": inputs(versions={**VERSIONS, "bitsandbytes": None}),
        "device": inputs(device="gpu"),
        "workers": inputs(num_workers=2),
    }
    for what, other in changed.items():
        assert baselines.cache_path(other) != base, what
    assert base.parent == cache / "baselines" and base.name.startswith("qlora-") and base.suffix == ".json"


def test_the_key_does_not_change_with_dict_order_or_with_training_only_settings(cache: Path) -> None:
    reordered = {k: dict(reversed(list(v.items()))) if isinstance(v, dict) else v for k, v in reversed(CONFIG.items())}
    assert list(reordered) != list(CONFIG)
    assert baselines.cache_path(inputs(reordered)) == baselines.cache_path(inputs())
    # The baseline trains nothing: its config sets max_steps to 0 whatever the sweep's was.
    assert baselines.cache_path(inputs({**CONFIG, "optim": {"max_steps": 2}})) == \
        baselines.cache_path(inputs({**CONFIG, "optim": {"max_steps": 40}}))


def test_code_fingerprint_covers_every_python_file_by_path_and_contents(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    for root, order in ((a, ["x.py", "sub/y.py"]), (b, ["sub/y.py", "x.py"])):  # written in different orders
        for name in order:
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_text(f"# {name}\n")
    first = baselines.code_fingerprint(a)
    assert first == baselines.code_fingerprint(b)
    (a / "notes.txt").write_text("not code")
    assert baselines.code_fingerprint(a) == first
    (a / "sub" / "y.py").write_text("# sub/y.py changed\n")
    assert baselines.code_fingerprint(a) != first
    (b / "sub" / "z.py").write_text("")
    assert baselines.code_fingerprint(b) != first
    assert len(baselines.code_fingerprint()) == 64  # the real trainables/ tree


def test_installed_versions_are_found_and_a_missing_package_is_none(monkeypatch: pytest.MonkeyPatch) -> None:
    versions = baselines.package_versions()
    assert set(versions) == {"torch", "transformers", "peft", "bitsandbytes"}
    assert versions["torch"] and versions["transformers"]
    monkeypatch.setattr(baselines, "PACKAGES", ("no-such-package-xyz",))
    assert baselines.package_versions() == {"no-such-package-xyz": None}


def test_a_local_data_folder_is_keyed_by_its_files(cache: Path, tmp_path: Path) -> None:
    folder = tmp_path / "audio"
    folder.mkdir()
    (folder / "a.txt").write_text("hello")
    config = with_value(CONFIG, "data", "source", str(folder))
    before = baselines.cache_path(inputs(config))
    assert baselines.cache_path(inputs(config)) == before
    (folder / "a.txt").write_text("hello world")
    assert baselines.cache_path(inputs(config)) != before
    # Asset and hub names are not paths on disk: their names are the key.
    assert baselines.local_paths({"model": "whisper-tiny.en", "data": {"source": "google/fleurs"}}) == {}
    assert baselines.local_paths({"prompt": "/tmp/" + "x" * 300}) == {}  # too long for a file name: no path, no error


# ------------------------------------------------------------------------------------------------- reading and writing


def test_a_stored_baseline_is_read_back_without_measuring(cache: Path) -> None:
    measure = Measure(0.25)
    first = baselines.cached_or_measured(inputs(), measure)
    assert (first.cached, measure.calls, first.metrics) == (False, 1, {"wer": 0.25, "cer": 0.125})
    again = baselines.cached_or_measured(inputs(), measure)
    assert (again.cached, measure.calls, again.metrics) == (True, 1, first.metrics)
    assert again.path == first.path and again.measured_at == first.measured_at
    record = json.loads(first.path.read_text())  # what a person reading the file sees
    assert record["inputs"]["method"] == "qlora" and record["inputs"]["config"]["model"] == "whisper-tiny.en"
    assert record["inputs"]["versions"] == VERSIONS and record["measured_at"] == first.measured_at
    assert [p.name for p in first.path.parent.iterdir()] == [first.path.name]  # no temporary file left
    # Other inputs are another file: measured, not read.
    other = baselines.cached_or_measured(inputs(code="code-b"), measure)
    assert (other.cached, measure.calls) == (False, 2) and other.path != first.path


@pytest.mark.parametrize("content", ["", "{not json", "[]", '{"metrics": {"wer": 0.1}}', "null",
                                     '{"key": "000000000000", "measured_at": "x", "metrics": {"wer": 0.1}}',
                                     '{"key": "KEY", "measured_at": "x", "metrics": {"wer": "0.1"}}',
                                     '{"key": "KEY", "measured_at": "x", "metrics": {}}'])
def test_a_corrupt_or_foreign_file_is_a_miss_and_is_overwritten(cache: Path, content: str) -> None:
    from trainables.assets.cache import input_key

    path = baselines.cache_path(inputs())
    path.parent.mkdir(parents=True)
    path.write_text(content.replace("KEY", input_key(inputs())))
    assert baselines.read(inputs()) is None
    measure = Measure(0.3)
    result = baselines.cached_or_measured(inputs(), measure)
    assert (result.cached, measure.calls, result.path) == (False, 1, path)
    assert baselines.read(inputs()).metrics == {"wer": 0.3, "cer": 0.15}


def test_an_unreadable_file_is_a_miss(cache: Path) -> None:
    path = baselines.cache_path(inputs())
    path.mkdir(parents=True)  # a folder where the file should be: reading it fails
    assert baselines.read(inputs()) is None


def test_fresh_measures_again_and_overwrites(cache: Path) -> None:
    baselines.cached_or_measured(inputs(), Measure(0.25))
    measure = Measure(0.5)
    fresh = baselines.cached_or_measured(inputs(), measure, fresh=True)
    assert (fresh.cached, measure.calls, fresh.metrics["wer"]) == (False, 1, 0.5)
    assert baselines.cached_or_measured(inputs(), measure).metrics["wer"] == 0.5 and measure.calls == 1


def test_a_failed_measurement_is_not_cached(cache: Path) -> None:
    def fails() -> dict[str, float]:
        raise RuntimeError("baseline run failed: out of memory")

    with pytest.raises(RuntimeError, match="out of memory"):
        baselines.cached_or_measured(inputs(), fails)
    assert not baselines.cache_path(inputs()).exists()
    assert baselines.cached_or_measured(inputs(), Measure(0.2)).cached is False


# ------------------------------------------------------------------------------------------------- the plan, the runner


def local_qlora_rank() -> spaces.ResolvedSweep:
    """qlora_rank as `python -m platform.sweep qlora_rank --dry-run` resolves it."""
    return spaces.resolve(spaces.find("qlora_rank"), "local", {})


def test_the_plan_says_whether_the_baseline_is_cached_and_dry_run_writes_nothing(
        cache: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert sweep.main(["qlora_rank", "--dry-run"]) == 0
    path = baselines.cache_path(baselines.sweep_inputs(local_qlora_rank()))
    assert f"baseline  the untuned model, measured once, then cached ({path})\n" in capsys.readouterr().out
    assert not cache.exists() and not ray.is_initialized()

    stored = baselines.write(baselines.sweep_inputs(local_qlora_rank()), {"wer": 0.2})
    assert stored.path == path
    assert sweep.main(["qlora_rank", "--dry-run"]) == 0
    assert f"baseline  the untuned model, cached {stored.measured_at} ({path})\n" in capsys.readouterr().out
    assert sweep.main(["qlora_rank", "--dry-run", "--fresh-baseline"]) == 0
    assert f"baseline  the untuned model, measured again (--fresh-baseline), then cached ({path})\n" in \
        capsys.readouterr().out
    assert [p.name for p in path.parent.iterdir()] == [path.name] and not ray.is_initialized()


@pytest.fixture(scope="module")
def tracking(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, str]:
    """A real MLflow store (sqlite, as the sweep's default) and an experiment in it; made once, its schema is slow."""
    from mlflow.tracking import MlflowClient

    c = MlflowClient(tracking_uri=f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}")
    return c, c.create_experiment("baseline-cache")


def tracking_run(tracking: tuple[Any, str]) -> tuple[Any, str]:
    """The client and a new run standing for the sweep's parent run."""
    c, experiment = tracking
    return c, c.create_run(experiment).info.run_id


def test_the_runner_uses_a_cached_baseline_and_tags_the_parent_run(
        cache: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
        tracking: tuple[Any, str]) -> None:
    def no_run(*_: Any) -> dict[str, float]:
        raise AssertionError("the baseline was measured although it is cached")

    monkeypatch.setattr(runner, "measure_baseline", no_run)  # a miss would start a Ray Train run here
    s = local_qlora_rank()
    stored = baselines.write(baselines.sweep_inputs(s), {"wer": 0.2, "cer": 0.1})
    c, parent = tracking_run(tracking)
    assert runner.sweep_baseline(s, str(tmp_path / "train"), None, c, parent, fresh=False) == {"wer": 0.2, "cer": 0.1}
    out = capsys.readouterr().out
    assert f"the untuned model (baseline): cached {stored.measured_at}, not measured again ({stored.path}" in out
    assert "measuring" not in out
    tags = c.get_run(parent).data.tags
    assert tags["baseline_cache"] == str(stored.path) and tags["baseline_cached_at"] == stored.measured_at


def test_the_runner_with_fresh_baseline_measures_and_overwrites(
        cache: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
        tracking: tuple[Any, str]) -> None:
    s = local_qlora_rank()
    stored = baselines.write(baselines.sweep_inputs(s), {"wer": 0.2})
    # What measure_baseline's Ray Train run would return; the board is only read while it runs.
    monkeypatch.setattr(runner, "measure_baseline", lambda *_: {"wer": 0.4})
    c, parent = tracking_run(tracking)
    assert runner.sweep_baseline(s, str(tmp_path / "train"), None, c, parent, fresh=True) == {"wer": 0.4}
    assert "measuring the untuned model once (baseline)" in capsys.readouterr().out
    assert "baseline_cache" not in c.get_run(parent).data.tags
    assert baselines.read(baselines.sweep_inputs(s)).metrics == {"wer": 0.4}
    assert json.loads(stored.path.read_text())["metrics"] == {"wer": 0.4}
