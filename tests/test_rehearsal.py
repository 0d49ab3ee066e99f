"""`--rehearse`: every shipped gpu preset rewritten to offline stand-ins (fast), and one run end to end."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from platform import rehearsal, spaces
from tests.conftest import ROOT
from trainables.assets import _looks_like_hub_id
from trainables.blocks.config import flatten


def _strings(config: dict) -> list[tuple[str, str]]:
    return [(k, v) for k, v in flatten(config).items() if isinstance(v, str)]


@pytest.mark.parametrize("name", spaces.available())
def test_every_gpu_preset_rehearses_offline(name: str) -> None:
    sweep = spaces.resolve(spaces.find(name), "gpu", {}, rewrite=rehearsal.rehearse)  # the method's own checks run here
    levels = [level for p in sweep.space.values() for level in (p.named or {}).values()]
    for config in (sweep.config, *levels):
        for key, value in _strings(config):
            assert not _looks_like_hub_id(value), f"{name}: {key}={value} still names the hub"
            assert value not in rehearsal.DATASET_WRITERS, f"{name}: {key}={value}"
    for config in (sweep.config, *levels):
        flat = flatten(config)
        assert flat.get("optim.max_steps", 0) <= rehearsal.BUDGETS["optim.max_steps"]
        assert flat.get("optim.name", "adamw") not in rehearsal.OPTIMISERS
    assert sweep.resources.gpus_per_worker == 0 and sweep.num_samples <= rehearsal.MAX_TRIALS
    assert sweep.preset == "gpu" and sweep.rehearsal


def test_stand_ins_keep_the_hub_schemas() -> None:
    import pyarrow.parquet as pq

    fleurs = Path(rehearsal.local_dataset("google/fleurs", "en_us"))
    assert sorted(p.name for p in (fleurs / "en_us").iterdir() if p.is_dir()) == ["test", "train", "validation"]
    assert pq.read_schema(fleurs / "en_us" / "train" / "0000.parquet").names == [
        "id", "num_samples", "path", "audio", "transcription", "raw_transcription", "gender", "lang_id", "language",
        "lang_group_id"]
    libri = Path(rehearsal.local_dataset("librispeech_asr", None))
    assert sorted(p.name for p in libri.iterdir() if p.is_dir()) == ["test", "train.100", "validation"]
    assert pq.read_schema(libri / "train.100" / "0000.parquet").names == [
        "file", "audio", "text", "speaker_id", "chapter_id", "id"]


def test_a_fleurs_language_without_a_stand_in_is_one_line() -> None:
    with pytest.raises(spaces.SpaceError, match="google/fleurs configuration 'ja_jp' has no offline stand-in"):
        rehearsal.local_dataset("google/fleurs", "ja_jp")


def test_rehearse_needs_the_gpu_preset(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "platform.sweep", "qlora_rank", "--preset", "local", "--rehearse",
                          "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}", "--storage", str(tmp_path / "r")],
                         cwd=ROOT, capture_output=True, text=True, timeout=120, env={**os.environ, "RAY_ADDRESS": ""})
    assert out.returncode == 2
    assert out.stderr.strip() == "error: --rehearse rehearses the gpu preset; got --preset local"


def _rehearse_end_to_end(name: str, tmp_path: Path) -> float:
    """Run sweep `name`'s gpu preset with --rehearse; assert its trials FINISHED with a finite wer; wall seconds."""
    from mlflow.tracking import MlflowClient

    started = time.monotonic()
    # One trial: the preset's whole path (its searcher's first suggestion, its scheduler, its workers) for half
    # the time of the rehearsal's default two; the second trial adds no code path, only minutes to CI.
    out = subprocess.run([sys.executable, "-m", "platform.sweep", name, "--preset", "gpu", "--rehearse",
                          "--num-samples", "1", "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}", "--storage", str(tmp_path / "results"),
                          "--no-register"], cwd=ROOT, capture_output=True, text=True, timeout=1500,
                         env={**os.environ, "RAY_ADDRESS": ""})
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "rehearse  " in out.stdout
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.get_experiment_by_name(name)
    trials = [r for r in client.search_runs([exp.experiment_id]) if "mlflow.parentRunId" in r.data.tags]
    assert len(trials) == 1 and trials[0].info.status == "FINISHED"
    assert all(r.data.tags["preset"] == "gpu" and math.isfinite(r.data.metrics["wer"]) for r in trials)
    return time.monotonic() - started


MAIN_SWEEPS = {"qlora": "qlora_rank", "dq_whisper": "dq_whisper_bits", "dqlora": "dqlora_lambda",
               "whistle": "whistle_adaptation", "llm_adaptor": "adaptor_arch"}
"""Each method's main sweep, whose gpu preset the integration tier rehearses end to end."""


def test_every_method_has_a_main_sweep_rehearsed() -> None:
    from trainables import METHODS

    assert sorted(MAIN_SWEEPS) == sorted(METHODS)
    assert all(spaces.resolve(spaces.find(name), "gpu", {}, rewrite=rehearsal.rehearse).method == method
               for method, name in MAIN_SWEEPS.items())


@pytest.mark.integration
@pytest.mark.parametrize("name", MAIN_SWEEPS.values())
def test_each_methods_main_gpu_preset_rehearses_end_to_end(name: str, tmp_path: Path) -> None:
    wall = _rehearse_end_to_end(name, tmp_path)
    print(f"\n[rehearsal] {name} --preset gpu --rehearse: {wall:.0f} s")
