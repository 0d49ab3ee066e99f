"""The QLoRA train loop on two CPU workers through Ray Train's TorchTrainer (gloo)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from tests.conftest import CONTRACT_METRICS, ROOT

pytestmark = pytest.mark.integration  # starts Ray


@pytest.fixture(scope="module")
def ray_local():
    import ray

    from trainables.blocks.launch import runtime_env

    ray.init(num_cpus=2, include_dashboard=False, runtime_env=runtime_env(str(ROOT)), log_to_driver=False)
    yield
    ray.shutdown()


def test_two_worker_torch_trainer_reports_contract_metrics(ray_local, tiny_whisper_dir: Path, tmp_path: Path) -> None:
    from trainables.blocks.launch import torch_trainer

    config = {
        "model": str(tiny_whisper_dir), "data": {"source": "espeak-smoke", "max_eval_items": 6, "max_val_items": 4},
        "precision": {"bits": 32}, "lora": {"r": 4}, "eval": {"max_new_tokens": 4},
        "optim": {"max_steps": 3, "warmup_steps": 1, "batch_size": 2},
    }
    trainer = torch_trainer("qlora", config, num_workers=2, cpus_per_worker=1, storage_path=str(tmp_path), name="two")
    result = trainer.fit()
    assert result.error is None
    for name in CONTRACT_METRICS:
        assert name in result.metrics and math.isfinite(result.metrics[name]), name
    assert result.metrics["step"] == 3
    files = Path(result.checkpoint.path)
    rows = [json.loads(line) for line in (files / "hypotheses.jsonl").read_text().splitlines()]
    assert len(rows) == 6  # both workers' shares of the evaluation, gathered
    assert (files / "adapter" / "adapter_config.json").exists()


def test_a_trials_trainer_is_built_without_torch_or_the_method(tmp_path: Path) -> None:
    """What a trial function builds, and what Ray Train's controller unpickles, imports neither torch nor the
    method: 1 s of every trial's controller start, 2 s of a sweep's first trial (docs/benchmarks.md)."""
    import subprocess
    import sys

    script = (
        "import sys, ray.cloudpickle as cp\n"
        "from trainables.blocks.launch import torch_trainer\n"
        "t = torch_trainer('qlora', {'model': 'x'}, num_workers=2, check=False)\n"
        "for part in (t.backend_config, t.train_loop_per_worker):\n"
        "    cp.loads(cp.dumps(part))\n"
        "print(sorted(m for m in ('torch', 'trainables.qlora', 'transformers') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
