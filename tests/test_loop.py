"""The one step loop (trainables/blocks/loop.py): step numbering across phases, when validation runs, renamed
values, the per-step hook, and what it records."""

from __future__ import annotations

import torch

from trainables.blocks.checkpoints import Checkpointer
from trainables.blocks.config import build
from trainables.blocks.loop import fit
from trainables.blocks.training import OptimConfig, Stepper

CPU = torch.device("cpu")


def _phase(steps: int) -> tuple[torch.nn.Linear, Stepper]:
    torch.manual_seed(0)
    net = torch.nn.Linear(3, 1)
    cfg = build(OptimConfig, {"max_steps": steps, "warmup_steps": 0, "lr": 0.05, "checkpoint_every": 0})
    return net, Stepper(cfg, list(net.parameters()), CPU)


def _loss(net: torch.nn.Linear):
    x = torch.ones(4, 3)

    def micro_loss(micro: int) -> tuple[torch.Tensor, dict[str, float]]:
        return net(x).pow(2).mean(), {"part": 1.0}

    return micro_loss


def test_validation_runs_every_k_steps_of_a_phase_but_not_after_its_last() -> None:
    net, stepper = _phase(6)
    ckpt = Checkpointer(0, {"net": net}, total_steps=6)
    calls: list[int] = []

    def validate() -> dict[str, float]:
        calls.append(stepper.steps_done)
        return {"val_wer": 0.5}

    fit(ckpt, stepper, _loss(net), validate=validate, eval_every=2)
    assert calls == [2, 4]  # not 6: the trial's end scores the validation set anyway
    assert [p["step"] for p in ckpt.history] == [1, 2, 3, 4, 5, 6]
    assert ckpt.history[0]["loss"] > ckpt.history[-1]["loss"]  # it trained
    assert all(p["part"] == 1.0 for p in ckpt.history)


def test_a_second_phase_continues_the_step_axis_and_can_rename_what_it_logs() -> None:
    net, first = _phase(3)
    _, second = _phase(2)
    second = Stepper(second.cfg, list(net.parameters()), CPU)
    ckpt = Checkpointer(0, {"net": net}, total_steps=5)
    seen: list[int] = []
    fit(ckpt, first, _loss(net), names={"loss": "phase1_loss", "lr": "phase1_lr"})
    fit(ckpt, second, _loss(net), first=4, before_step=seen.append)
    assert [p["step"] for p in ckpt.history] == [1, 2, 3, 4, 5]
    assert seen == [4, 5]
    assert "phase1_loss" in ckpt.history[0] and "loss" not in ckpt.history[0]
    assert "loss" in ckpt.history[3] and "phase1_loss" not in ckpt.history[3]


def test_without_eval_every_validation_never_runs() -> None:
    net, stepper = _phase(4)
    ckpt = Checkpointer(0, {"net": net}, total_steps=4)

    def validate() -> dict[str, float]:
        raise AssertionError("validated with eval_every = 0")

    fit(ckpt, stepper, _loss(net), validate=validate, eval_every=0)
    assert len(ckpt.history) == 4
