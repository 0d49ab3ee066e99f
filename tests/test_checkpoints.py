"""Resuming from a mid-training checkpoint gives exactly the uninterrupted run, for every method (no Ray).

Each test trains a tiny config once (run A) with checkpoints switched on and kept in memory by step, then
trains a fresh setup of the same config that finds one of A's checkpoints as Ray Train's latest (run B), and
checks that B's history holds every step once, with A's values, and that B ends with A's trainable weights.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch

from trainables.assets.cache import CACHE_ENV
from trainables.blocks import checkpoints
from trainables.blocks.config import merge

State = dict[str, Any]
Weights = dict[str, torch.Tensor]


class Saved:
    """The checkpoints one run handed to Ray, read back as `latest_state()` would, by step."""

    def __init__(self) -> None:
        self.states: dict[int, State] = {}

    def keep(self, metrics: dict[str, float], folder: Path | None, step: int) -> None:
        assert folder is not None, "a single worker is rank 0: every checkpoint has a folder"
        assert math.isfinite(metrics["step"]) and int(metrics["step"]) == step
        self.states[step] = torch.load(folder / checkpoints.STATE_FILE, map_location="cpu", weights_only=True)


@pytest.fixture
def saved(monkeypatch: pytest.MonkeyPatch) -> Iterator[Saved]:
    """Checkpoints switched on (as inside Ray Train) and kept here instead of reported."""
    keeper = Saved()
    monkeypatch.setattr(checkpoints, "saving", lambda: True)
    monkeypatch.setattr(checkpoints, "report_checkpoint", keeper.keep)
    monkeypatch.setattr(checkpoints, "latest_state", lambda: None)
    yield keeper


def trainable(*modules: torch.nn.Module | None) -> Weights:
    return {f"{i}.{n}": p.detach().clone() for i, m in enumerate(modules) if m is not None
            for n, p in m.named_parameters() if p.requires_grad}


def assert_same_history(b: list[dict[str, float]], a: list[dict[str, float]], steps: int) -> None:
    assert [p["step"] for p in b] == list(range(1, steps + 1)), [p["step"] for p in b]
    assert [p["step"] for p in a] == list(range(1, steps + 1)), [p["step"] for p in a]
    for pa, pb in zip(a, b, strict=True):
        assert set(pa) == set(pb), (pa, pb)
        for key, value in pa.items():
            assert pb[key] == pytest.approx(value, rel=1e-5, abs=1e-8, nan_ok=True), (pa["step"], key, pb[key], value)


def assert_same_weights(b: Weights, a: Weights) -> None:
    assert a and set(a) == set(b)
    for name, value in a.items():
        assert torch.allclose(b[name], value, rtol=1e-5, atol=1e-7), name


def check_resume(monkeypatch: pytest.MonkeyPatch, saved: Saved, module: ModuleType, cfg: Any,
                 weights: Callable[[Any], Weights], steps: int, resume_at: list[int],
                 checkpoint_steps: list[int]) -> dict[int, State]:
    """Run A, then one run B per step in `resume_at`, each from A's checkpoint at that step; returns A's states."""
    s = module.setup(cfg)
    before = weights(s)
    history_a, _ = module.train(s)
    final_a = weights(s)
    states_a = dict(saved.states)
    assert sorted(states_a) == checkpoint_steps
    assert any(not torch.equal(final_a[n], before[n]) for n in before), "run A trained nothing"
    # A later step starts from another point: each checkpoint is that step's, not a copy of the first.
    assert [len(states_a[k]["history"]) for k in checkpoint_steps] == checkpoint_steps
    for k in resume_at:
        state = states_a[k]
        saved.states.clear()
        monkeypatch.setattr(checkpoints, "latest_state", lambda state=state: state)
        s = module.setup(cfg)
        history_b, _ = module.train(s)
        assert_same_history(history_b, history_a, steps)
        assert_same_weights(weights(s), final_a)
        # Run B checkpoints again after the resume, and those states are the uninterrupted run's.
        assert sorted(saved.states) == [j for j in checkpoint_steps if j > k]
        for j, later in saved.states.items():
            assert later["streams"] == states_a[j]["streams"]
            assert later["stepper"]["steps_done"] == states_a[j]["stepper"]["steps_done"]
            for part, tensors in states_a[j]["weights"].items():
                assert_same_weights(later["weights"][part], tensors)
    return states_a


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    return tmp_path / "cache"


WHISPER_DATA = {"source": "espeak-smoke", "max_train_items": 8, "max_val_items": 2, "max_eval_items": 2}


# --------------------------------------------------------------------------- qlora


def _qlora(tiny_whisper_dir: Path, **over: object) -> Any:
    from trainables import qlora

    base = {"model": str(tiny_whisper_dir), "data": WHISPER_DATA, "precision": {"bits": 32},
            "lora": {"r": 2, "modules": ["q", "v"], "dropout": 0.1}, "eval": {"max_new_tokens": 2},
            "optim": {"max_steps": 7, "warmup_steps": 1, "batch_size": 2, "lr": 1e-2, "checkpoint_every": 3}}
    return qlora.parse_config(merge(base, over))


def test_qlora_resumes_exactly(tiny_whisper_dir: Path, monkeypatch: pytest.MonkeyPatch, saved: Saved) -> None:
    from trainables import qlora

    cfg = _qlora(tiny_whisper_dir)
    assert cfg.spec_augment.enabled  # the augmentation generator is part of what must come back
    states = check_resume(monkeypatch, saved, qlora, cfg, lambda s: trainable(s.model), 7, [3], [3, 6])
    assert set(states[3]["rng"][0]["generators"]) == {"augment"}
    assert states[3]["streams"] == {"train": 3}


def test_qlora_adalora_resumes_exactly_in_the_middle_of_pruning(tiny_whisper_dir: Path, monkeypatch: pytest.MonkeyPatch,
                                                                saved: Saved) -> None:
    from trainables import qlora

    cfg = _qlora(tiny_whisper_dir, lora={"kind": "adalora"},
                 optim={"max_steps": 12, "checkpoint_every": 4, "lr": 1e-2})
    schedule = qlora.adalora_schedule(12, 1, cfg.adalora)
    assert schedule["tinit"] < 4 < 12 - schedule["tfinal"]  # step 4's checkpoint falls inside the pruning phase
    states = check_resume(monkeypatch, saved, qlora, cfg, lambda s: trainable(s.model), 12, [4], [4, 8])
    extra = states[4]["extra"]
    assert {"ipt", "exp_avg_ipt", "exp_avg_unc", "rank_pattern"} <= set(extra) and extra["exp_avg_ipt"]


# --------------------------------------------------------------------------- dqlora


def test_dqlora_resumes_exactly(tiny_whisper_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                saved: Saved) -> None:
    from trainables import dqlora

    monkeypatch.setattr(dqlora, "cache_root", lambda: tmp_path)
    cfg = dqlora.parse_config({
        "student": str(tiny_whisper_dir), "precision": {"bits": 32}, "lora": {"r": 2, "dropout": 0.1},
        "kd": {"teacher": str(tiny_whisper_dir), "lambda_": 1.0}, "data": WHISPER_DATA,
        "noise": {"kind": "white", "snr_range": [0.0, 20.0]}, "eval": {"max_new_tokens": 2},
        "optim": {"max_steps": 7, "warmup_steps": 1, "batch_size": 2, "lr": 1e-2, "checkpoint_every": 3},
    })
    states = check_resume(monkeypatch, saved, dqlora, cfg, lambda s: trainable(s.model, s.projection), 7, [3], [3, 6])
    assert states[3]["streams"] == {"train": 3}


# --------------------------------------------------------------------------- dq_whisper


def test_dq_whisper_resumes_exactly(tiny_whisper_dir: Path, cache: Path, monkeypatch: pytest.MonkeyPatch,
                                    saved: Saved) -> None:
    from trainables import dq_whisper

    cfg = dq_whisper.parse_config({
        "teacher": str(tiny_whisper_dir), "student": {"encoder_layers": 1, "decoder_layers": 1},
        "data": WHISPER_DATA, "quant": {"bits": 4}, "spec_augment": {"enabled": True}, "eval": {"max_new_tokens": 2, "batch_size": 2},
        "optim": {"max_steps": 7, "warmup_steps": 1, "batch_size": 2, "lr": 1e-2, "checkpoint_every": 3},
    })
    assert cfg.spec_augment.enabled
    states = check_resume(monkeypatch, saved, dq_whisper, cfg, lambda s: trainable(s.student, s.projection), 7,
                          [3], [3, 6])
    assert set(states[3]["rng"][0]["generators"]) == {"augment"}


# --------------------------------------------------------------------------- whistle


def test_whistle_resumes_exactly(tiny_whisper_dir: Path, cache: Path, monkeypatch: pytest.MonkeyPatch,
                                 saved: Saved) -> None:
    from trainables import whistle

    cfg = whistle.parse_config({
        "model": str(tiny_whisper_dir), "mode": "tts+tle", "source_ratio": 0.5,  # all three kinds of batch
        "data": {"source": "espeak-smoke", "max_train_items": 16, "max_val_items": 2, "max_eval_items": 2},
        "target": {"text": "espeak-smoke", "eval_source": "espeak-smoke", "max_sentences": 8, "max_eval_items": 2},
        "tle": {"width": 32, "heads": 2, "layers": 1, "latent_dim": 4, "conv_width": 16, "steps": 2, "batch_size": 4,
                "anneal_steps": 1},
        "lora": {"r": 2, "dropout": 0.1}, "eval": {"max_new_tokens": 2, "batch_size": 2},
        "optim": {"max_steps": 7, "warmup_steps": 1, "batch_size": 2, "lr": 1e-2, "checkpoint_every": 3},
    })
    states = check_resume(monkeypatch, saved, whistle, cfg, lambda s: trainable(s.model), 7, [3], [3, 6])
    # Steps 1..3 at source_ratio 0.5: one or two source batches, the rest target batches.
    assert sum(states[3]["streams"].values()) == 3 and states[3]["streams"]["source"] >= 1
    assert set(states[3]["rng"][0]["generators"]) == {"tle"}


# --------------------------------------------------------------------------- llm_adaptor




def _llm_adaptor(tiny_whisper_dir: Path, tiny_llm_dir: Path, contrastive_steps: int) -> Any:
    from trainables import llm_adaptor

    return llm_adaptor.parse_config({
        "encoder": {"model": str(tiny_whisper_dir)}, "llm": {"model": str(tiny_llm_dir), "adapt": "lora",
                                                             "lora": {"r": 2, "dropout": 0.1}},
        # Dropout in the adaptor (both phases) and in the LLM's LoRA (phase 2) draws from the global generator.
        "adaptor": {"kind": "transformer", "k": 4, "width": 32, "layers": 1, "heads": 2, "dropout": 0.1},
        "data": {"source": "espeak-smoke", "max_train_items": 8, "max_val_items": 2, "max_eval_items": 2},
        "contrastive": {"steps": contrastive_steps, "batch_size": 4, "warmup_steps": 1},
        "optim": {"max_steps": 4, "warmup_steps": 1, "batch_size": 2, "lr": 1e-2, "checkpoint_every": 3},
        "eval": {"batch_size": 2, "max_new_tokens": 2},
    })


def test_llm_adaptor_resumes_exactly_in_either_phase(tiny_whisper_dir: Path, tiny_llm_dir: Path, cache: Path,
                                                     monkeypatch: pytest.MonkeyPatch, saved: Saved) -> None:
    """Contrastive steps 1..4, cross-entropy steps 5..8: the checkpoint at 3 is in phase 1, the one at 6 in phase 2."""
    from trainables import llm_adaptor

    cfg = _llm_adaptor(tiny_whisper_dir, tiny_llm_dir, 4)
    states = check_resume(monkeypatch, saved, llm_adaptor, cfg, lambda s: trainable(s.model), 8, [3, 6], [3, 6])
    assert states[3]["streams"] == {"contrastive": 3} and states[6]["streams"] == {"ce": 2}
    assert "contrastive_loss" in states[3]["history"][-1] and "loss" in states[6]["history"][-1]


def test_llm_adaptor_resumes_exactly_from_the_end_of_phase_one(tiny_whisper_dir: Path, tiny_llm_dir: Path,
                                                               cache: Path, monkeypatch: pytest.MonkeyPatch,
                                                               saved: Saved) -> None:
    """The checkpoint at step 3 closes the contrastive phase: phase 2 must start as it did after phase 1."""
    from trainables import llm_adaptor

    cfg = _llm_adaptor(tiny_whisper_dir, tiny_llm_dir, 3)
    check_resume(monkeypatch, saved, llm_adaptor, cfg, lambda s: trainable(s.model), 7, [3, 6], [3, 6])


# --------------------------------------------------------------------------- the saved state itself


class _Two(torch.nn.Module):
    def __init__(self, width: int = 4) -> None:
        super().__init__()
        self.a, self.b = torch.nn.Linear(3, width), torch.nn.Linear(3, 2)
        self.b.requires_grad_(False)  # frozen: never saved


def test_a_saved_state_reads_back_with_weights_only(monkeypatch: pytest.MonkeyPatch, saved: Saved) -> None:
    """Every part of a state (numpy and python RNG, generators, streams, stepper, history) survives
    `torch.load(weights_only=True)`; restoring it brings the generators and the data position back."""
    from trainables.blocks.batching import BatchStream
    from trainables.blocks.config import build
    from trainables.blocks.loop import fit
    from trainables.blocks.training import OptimConfig, Stepper

    model = _Two()
    cfg = build(OptimConfig, {"max_steps": 4, "warmup_steps": 1, "lr": 0.1, "checkpoint_every": 2})

    def run(state: State | None) -> tuple[list[dict[str, float]], list[list[int]], list[float]]:
        monkeypatch.setattr(checkpoints, "latest_state", lambda: state)
        torch.manual_seed(1)
        net = _Two()
        stepper = Stepper(cfg, [p for p in net.parameters() if p.requires_grad], torch.device("cpu"))
        stream, gen, seen, draws = BatchStream(list(range(10)), 2, 0, 0, 1), torch.Generator().manual_seed(7), [], []
        ckpt = checkpoints.Checkpointer(cfg.checkpoint_every, {"net": net}, total_steps=4)

        def loss(micro: int) -> tuple[torch.Tensor, dict[str, float]]:
            idx = next(stream)
            seen.append(idx)
            draws.append(float(torch.rand(1, generator=gen)) + float(torch.rand(1)))
            x = torch.tensor([[float(i), draws[-1], 1.0] for i in idx])
            return net.a(x).pow(2).mean(), {}

        fit(ckpt, stepper, loss, streams={"data": stream}, generators={"gen": gen})
        model.load_state_dict(net.state_dict())
        return ckpt.history, seen, draws

    history_a, seen_a, draws_a = run(None)
    weights_a = trainable(model)
    state = saved.states[2]
    assert state["weights"]["net"].keys() == {"a.weight", "a.bias"}  # the frozen layer is not saved
    assert state["streams"] == {"data": 2} and state["step"] == 2
    history_b, seen_b, draws_b = run(state)
    assert_same_history(history_b, history_a, 4)
    assert seen_b == seen_a[2:] and draws_b == pytest.approx(draws_a[2:], rel=0, abs=0)
    assert_same_weights(trainable(model), weights_a)


@pytest.mark.parametrize(("weights", "problem"), [
    ({"other": {"a.weight": torch.zeros(4, 3)}}, "it holds no weights for 'net'"),
    ({"net": {"a.weight": torch.zeros(4, 3), "c.weight": torch.zeros(4, 3)}}, "the model has no net.c.weight"),
])
def test_a_state_for_another_model_is_refused(weights: dict[str, Weights], problem: str,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(checkpoints, "latest_state", lambda: {"step": 2, "weights": weights, "history": []})
    with pytest.raises(RuntimeError, match=f"checkpoint does not match the model: {problem}"):
        checkpoints.Checkpointer(2, {"net": _Two()}, total_steps=4)


def test_a_state_of_another_shape_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """A rank-1 adapter's (1, 3) matrix broadcasts into a rank-4 one's (4, 3): it must be refused, not copied."""
    net = _Two()
    state = {"net": {"a.weight": torch.ones(1, 3), "a.bias": torch.ones(4)}}
    monkeypatch.setattr(checkpoints, "latest_state", lambda: {"step": 2, "weights": state, "history": []})
    with pytest.raises(RuntimeError, match="shapes differ for net.a.weight"):
        checkpoints.Checkpointer(2, {"net": net}, total_steps=4)


def test_a_state_lacking_a_trainable_weight_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """A model with more adapters than the checkpoint (say, one more module adapted) would keep fresh weights."""
    net = _Two()
    state = {"net": {"a.weight": torch.ones(4, 3)}}
    monkeypatch.setattr(checkpoints, "latest_state", lambda: {"step": 2, "weights": state, "history": []})
    with pytest.raises(RuntimeError, match="the checkpoint lacks net.a.bias"):
        checkpoints.Checkpointer(2, {"net": net}, total_steps=4)
