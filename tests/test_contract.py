"""One shape for every method: the method contract, the shared optimiser step, the one-worker capability."""

from __future__ import annotations

import dataclasses
import math
import re
import types
from pathlib import Path

import pytest
import torch

from platform import sweep
from trainables import METHODS, Method, contract_problems, load_method
from trainables.blocks.config import build
from trainables.blocks.training import OptimConfig, Stepper

ROOT = Path(__file__).resolve().parents[1]
CPU = torch.device("cpu")


@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_registered_method_satisfies_the_contract(name: str) -> None:
    module = load_method(name)
    assert isinstance(module, Method)
    assert contract_problems(module) == []
    assert dataclasses.is_dataclass(module.CONFIG)
    default = module.parse_config({})
    assert isinstance(default, module.CONFIG)
    # The baseline config is a config the method accepts, and it trains nothing.
    baseline = module.parse_config(module.baseline_config({}))
    assert baseline.optim.max_steps == 0


def test_an_incomplete_method_fails_the_contract(monkeypatch: pytest.MonkeyPatch) -> None:
    @dataclasses.dataclass
    class Config:
        steps: int = 1

    fake = types.ModuleType("fake_method")
    fake.CONFIG = Config
    fake.MAX_WORKERS = 0
    fake.parse_config = lambda config: build(Config, config)
    fake.run = lambda cfg: {}
    fake.baseline_config = "not a function"
    assert not isinstance(fake, Method)  # no train_loop_per_worker
    problems = contract_problems(fake)
    assert "no train_loop_per_worker" in problems
    assert "baseline_config is not callable" in problems
    assert any(p.startswith("MAX_WORKERS must be None or a positive integer") for p in problems)

    monkeypatch.setitem(METHODS, "fake", "fake_method")
    monkeypatch.setitem(__import__("sys").modules, "fake_method", fake)
    with pytest.raises(TypeError, match=r"method 'fake' \(fake_method\) breaks the method contract: no train_loop_per_worker"):
        load_method("fake")


def _stepper(scaler: torch.amp.GradScaler, max_grad_norm: float) -> tuple[Stepper, torch.nn.Linear]:
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    cfg = build(OptimConfig, {"lr": 0.1, "max_steps": 4, "warmup_steps": 0, "batch_size": 2, "grad_accum": 2,
                              "max_grad_norm": max_grad_norm})
    stepper = Stepper(cfg, list(model.parameters()), CPU, model)
    stepper.scaler = scaler  # what an fp16 CUDA run gets; constructed enabled here, on the CPU
    return stepper, model


def test_the_shared_step_scales_unscales_and_clips_with_an_enabled_scaler() -> None:
    scale = 1024.0
    stepper, model = _stepper(torch.amp.GradScaler("cpu", init_scale=scale, enabled=True), max_grad_norm=0.01)
    x = torch.randn(2, 2, 4)
    seen_in_backward: list[torch.Tensor] = []
    model.weight.register_hook(lambda g: seen_in_backward.append(g.clone()))
    after: dict[str, torch.Tensor] = {}

    def micro_loss(micro: int) -> tuple[torch.Tensor, dict[str, float]]:
        return model(x[micro]).pow(2).sum(), {"part": float(micro)}

    # The true gradient of the step's mean loss over the two micro-batches.
    reference = torch.nn.Linear(4, 3)
    reference.load_state_dict(model.state_dict())
    (sum(reference(x[i]).pow(2).sum() for i in range(2)) / 2).backward()
    true = reference.weight.grad

    point = stepper.step(micro_loss, after_update=lambda step: after.update(grad=model.weight.grad.clone()))
    # Scaled in the backward pass: each micro-batch's gradient is `scale` times its share of the true one.
    assert len(seen_in_backward) == 2
    assert torch.allclose(sum(seen_in_backward) / scale, true, rtol=1e-5)
    # Unscaled and then clipped before the optimiser step: the true direction at the clipping norm.
    assert true.norm() > 1.0  # so clipping to 0.01 has something to do
    assert after["grad"].norm() <= 0.01 + 1e-6
    cosine = torch.nn.functional.cosine_similarity(after["grad"].flatten(), true.flatten(), dim=0)
    assert cosine > 0.9999
    assert point["part"] == 0.5 and math.isfinite(point["loss"]) and point["lr"] > 0
    assert stepper.steps_done == 1 and model.weight.grad is None  # gradients zeroed after the step


def test_the_shared_step_skips_an_overflowing_step_and_lowers_the_scale() -> None:
    stepper, model = _stepper(torch.amp.GradScaler("cpu", init_scale=2.0**16, enabled=True), max_grad_norm=1.0)
    before = model.weight.detach().clone()
    stepper.step(lambda micro: (model(torch.ones(2, 4)).sum() * float("inf"), {}))
    assert torch.equal(model.weight, before)  # the optimiser step was skipped
    assert stepper.scaler.get_scale() < 2.0**16


def test_the_shared_step_is_the_only_place_that_steps_an_optimiser() -> None:
    """Every method's loop goes through Stepper.step: nothing else in trainables/ back-propagates or steps."""
    pattern = re.compile(r"\.backward\(|optimizer\.step\(|scaler\.step\(|\.zero_grad\(|clip_grad_norm_\(")
    offenders = [f"{path.relative_to(ROOT)}:{i}" for path in sorted((ROOT / "trainables").rglob("*.py"))
                 if path.name != "training.py"
                 for i, line in enumerate(path.read_text().splitlines(), 1) if pattern.search(line)]
    assert offenders == []


def _lines_matching(pattern: str, *, but: tuple[str, ...]) -> list[str]:
    regex = re.compile(pattern)
    return [f"{path.relative_to(ROOT)}:{i}" for path in sorted((ROOT / "trainables").rglob("*.py"))
            if path.relative_to(ROOT).as_posix() not in but
            for i, line in enumerate(path.read_text().splitlines(), 1) if regex.search(line)]


def test_one_step_loop_and_one_trial_end_serve_every_method() -> None:
    """`loop.fit` is the only loop over optimiser steps and `finish.finish_trial` the only writer of a trial's
    artifacts and contract metrics; every method trains through the one and ends through the other."""
    assert _lines_matching(r"\.steps\(|\.step_done\(|stepper\.step\(|for step in",
                           but=("trainables/blocks/loop.py",)) == []
    assert _lines_matching(r"write_artifacts\(|contract_metrics\(|energy_metrics\(|artifact_dir\(",
                           but=("trainables/blocks/finish.py",)) == []
    for name in METHODS:
        source = (ROOT / "trainables" / f"{name}.py").read_text()
        assert re.search(r"\bfit\(", source), f"{name} does not train with loop.fit"
        assert "-> Outcome:" in source and "entry_points(CONFIG, setup, train, measure)" in source, name


def test_a_two_worker_request_for_a_one_worker_method_fails_at_dry_run(tmp_path: Path,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    assert load_method("dq_whisper").MAX_WORKERS == 1
    assert sweep.main(["dq_whisper_alpha", "--dry-run", "--preset", "local"]) == 0
    capsys.readouterr()
    text = (ROOT / "search_spaces" / "dq_whisper_alpha.yaml").read_text()
    one, two = "resources: {num_workers: 1, cpus_per_worker: 2}", "resources: {num_workers: 2, cpus_per_worker: 1}"
    assert one in text
    path = tmp_path / "dq_whisper_two_workers.yaml"
    path.write_text(text.replace(one, two))
    assert sweep.main([str(path), "--dry-run", "--preset", "local"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert "presets.local.resources.num_workers: method 'dq_whisper' trains on at most 1" in err[0], err[0]


@pytest.mark.parametrize("method", ["dqlora", "whistle"])
def test_adalora_is_refused_where_no_loop_prunes_it(method: str) -> None:
    """AdaLoRA needs update_and_allocate every step; only qlora's loop calls it, so elsewhere it is a config error."""
    from trainables import load_method
    from trainables.blocks.config import ConfigError

    with pytest.raises(ConfigError, match="lora.kind: AdaLoRA's rank pruning runs in the qlora method only"):
        load_method(method).parse_config({"lora": {"kind": "adalora"}})
