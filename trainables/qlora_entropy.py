"""Entropy-aware LoRA: per-module ranks from activation entropy, an entropy term in the loss, logging.

What is measured
----------------
For every adapted linear layer (the names `models.target_module_names` returns) a forward hook
takes the layer's *input* activations X (tokens × d_in, every position of every utterance in the
batch, padding included). Inputs rather than outputs, because the input is what an adapter acts
on: the LoRA update is ΔW·x = B·A·x, and the gradient of a linear layer's weight is Σ_t g_t·x_tᵀ,
so every update training can produce has its rows in the span of the inputs the layer sees. The
number of directions those inputs really occupy bounds the rank an adapter can use; an output
spectrum would mostly describe the frozen weight W, not what adapting it needs. (`side="output"`
is available for comparison.) Consequences, by construction: q, k and v of one attention block
read the same tensor and get the same entropy, and so do the cross-attention k and v of every
Whisper decoder layer (they all read the encoder output).

The activations are centred (the per-feature mean carries no information), and their covariance
C has the eigenvalues λ_i; p_i = λ_i / Σ_j λ_j is the share of the variance along direction i.
The entropy of that spectrum, in nats, lies between 0 (all variance along one direction) and
log(min(tokens, d_in)) (spread evenly); exp(H) is an "effective number of dimensions". Two
orders are offered:

- order 2 (the default), the collision (Rényi-2) entropy H₂ = −log Σ p_i² = log(tr(C)² / ‖C‖_F²);
  exp(H₂) is the participation ratio. It needs no eigendecomposition, only one Gram product (of
  the smaller side of X), and its gradient is smooth, so the same definition serves as the
  training-time loss term; it is cheap enough to log during training.
- order 1, the Shannon (von Neumann) entropy −Σ p_i log p_i, from `torch.linalg.eigvalsh`.
  H₂ ≤ H₁; both rank layers alike in practice.

`measure_entropy` pools C over a few calibration batches (each batch centred on its own mean).
The d_in × d_in sums are kept in float64 on the CPU, one per distinct input tensor: about 190 MB
for Whisper tiny.en with every linear layer adapted, three quarters of it for fc2's 4·d-wide
input; past `max_bytes` (1 GiB) the modules are measured in groups, one pass over the batches
each. Training-time entropies are per batch (at most `max_tokens` rows per layer, strided).

Allocation rule
---------------
`allocate_ranks` splits a total rank budget R = Σ r_i in proportion to entropy, with bounds:
r_i* = clip(c·H_i, r_min, r_max), with the one c for which Σ r_i* = R (water-filling, found by
bisection), then rounded by largest remainder: every module gets ⌊r_i*⌋ and the units left over go
to the largest fractional parts (ties: higher entropy first, then model order). The ranks sum to
R exactly, stay within [r_min, r_max], and a module with higher entropy never gets a lower rank
than one with lower entropy (equal entropies may differ by one unit so the sum comes out exact).
Proportional to H rather than to exp(H), since exp(H) would hand nearly all the budget to the few
widest layers. Zero entropies are allowed (they get r_min unless the budget forces more); if every
entropy is 0 the split is uniform. `sharpen` raises the entropies to a power γ first (config
`sharpness`, default 1): measured layer entropies are often within 2× of each other, so γ = 1 is
close to uniform and larger γ makes the allocation visibly uneven. `rank_spread` gives an
allocation's min, max and Gini coefficient. `lora_rank_pattern` turns ranks into peft's `rank_pattern`.
LoRA's alpha stays global, so a module's update is scaled by alpha / r_i, as peft does for a
uniform rank.

The loss term
-------------
With activations collected during the training forward pass (`ActivationCollector`), the loss
becomes loss − λ·H̄, where H̄ is the mean over adapted modules of their activation entropy.
λ > 0 rewards spread-out representations: fine-tuning on a small, narrow corpus (a handful of
synthetic voices) tends to collapse representations onto the few directions that suffice for it,
which hurts speakers and domains outside it; the term resists that collapse, and keeps the
entropy profile that justified the rank allocation from falling apart under training. λ < 0 turns
it into a compression penalty, for the opposite ablation. With λ = 0 the term is not computed and
the loss is returned untouched, so it is bitwise the loss without the term.

Logging
-------
`entropy_metrics` flattens per-module values into `entropy/<short name>` (e.g. `entropy/enc3.q`,
`entropy/dec1.x.k` for cross-attention) plus `entropy/mean`; `entropy_heatmap` draws per-module
ranks or entropies as a PNG, module kind against stack and layer.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

import numpy as np
import torch

from trainables.blocks.config import require
from trainables.blocks.models import MODULE_KINDS

Side = Literal["input", "output"]


@dataclass
class EntropyConfig:
    """Entropy-aware rank allocation and the entropy term of the loss."""

    enabled: bool = False
    """Allocate per-module LoRA ranks from activation entropy on calibration batches (False = every module gets lora.r)."""
    budget: int | None = None
    """Total rank Σ r_i over the adapted modules; null = lora.r × number of adapted modules (the uniform total)."""
    r_min: int = 1
    """Smallest rank a module gets."""
    r_max: int | None = None
    """Largest rank a module gets (null = no cap besides the budget)."""
    sharpness: float = 1.0
    """γ: ranks are allocated in proportion to entropy^γ. 1 = proportional to entropy; > 1 spreads the ranks
    further apart (entropies of a model's layers often differ by less than 2×, so γ = 1 is nearly uniform);
    0 = uniform."""
    calibration_batches: int = 4
    """Training batches (optim.batch_size utterances each) the entropies are measured on, before LoRA is added."""
    side: Side = "input"
    """Activations measured: each adapted layer's input (what the adapter acts on) or its output."""
    order: int = 2
    """Entropy of the activation spectrum: 2 = collision (Rényi-2, no eigendecomposition), 1 = Shannon."""
    lambda_: float = 0.0
    """Weight λ of the loss term: loss − λ·(mean activation entropy); > 0 resists collapse, < 0 compresses, 0 = off."""
    max_tokens: int | None = 2048
    """Rows per layer used for training-time entropies (strided subsample; null = every token)."""
    log_every: int = 0
    """Log per-module activation entropy into the history every this many steps (0 = never)."""

    def check(self) -> None:
        require(self.budget is None or self.budget >= 1, "budget", f"must be at least 1 or null, got {self.budget}")
        require(self.r_min >= 1, "r_min", f"must be at least 1, got {self.r_min}")
        require(self.r_max is None or self.r_max >= self.r_min, "r_max", f"must be >= r_min ({self.r_min}), got {self.r_max}")
        require(math.isfinite(self.sharpness) and self.sharpness >= 0, "sharpness",
                f"must be finite and >= 0, got {self.sharpness}")
        require(self.calibration_batches >= 1, "calibration_batches", f"must be at least 1, got {self.calibration_batches}")
        require(self.order in (1, 2), "order", f"must be 1 (Shannon) or 2 (collision), got {self.order}")
        require(math.isfinite(self.lambda_), "lambda_", f"must be finite, got {self.lambda_}")
        require(self.max_tokens is None or self.max_tokens >= 2, "max_tokens", f"must be at least 2 or null, got {self.max_tokens}")
        require(self.log_every >= 0, "log_every", f"must be >= 0, got {self.log_every}")

    def logs(self, step: int) -> bool:
        """Whether training step `step` logs per-module entropy."""
        return self.log_every > 0 and step % self.log_every == 0

    def collects(self, step: int) -> bool:
        """Whether training step `step` needs the adapted layers' activations (for the term or for logging)."""
        return self.lambda_ != 0 or self.logs(step)


# --------------------------------------------------------------------------------------------
# Entropy of an activation spectrum


def gram_entropy(gram: torch.Tensor, order: int = 2) -> torch.Tensor:
    """Entropy (nats) of the normalised eigenvalue spectrum of a symmetric PSD matrix; 0 if it is all zero."""
    if order not in (1, 2):
        raise ValueError(f"entropy order must be 1 (Shannon) or 2 (collision), got {order}")
    scale = torch.diagonal(gram).sum()
    nonzero = scale > 0
    p = gram / scale.clamp_min(torch.finfo(gram.dtype).tiny)  # trace 1: its eigenvalues are the p_i
    if order == 2:
        purity = (p * p).sum()  # Σ p_i² = ‖P‖_F² for a symmetric P
        # Σ p_i² ≤ 1 exactly; rounding can push a rank-1 spectrum just above 1, i.e. a tiny negative entropy.
        purity = purity.clamp(max=1.0)
        return -torch.log(torch.where(nonzero, purity, torch.ones_like(purity)))
    eig = torch.linalg.eigvalsh(p).clamp_min(0)
    return -(eig * torch.log(eig.clamp_min(1e-30))).sum()


def activation_entropy(x: torch.Tensor, order: int = 2, max_tokens: int | None = None) -> torch.Tensor:
    """Entropy of the centred covariance spectrum of activations (..., features); differentiable.

    All leading dimensions are tokens; with `max_tokens`, every k-th token is kept so at most that
    many remain. The Gram matrix is built on the smaller side (same non-zero spectrum).
    """
    with torch.autocast(device_type=x.device.type, enabled=False):
        x = x.reshape(-1, x.shape[-1]).float()
        if max_tokens is not None and x.shape[0] > max_tokens:
            x = x[:: math.ceil(x.shape[0] / max_tokens)]
        x = x - x.mean(dim=0, keepdim=True)
        x = x * torch.rsqrt(x.square().mean() + 1e-12)  # scale-free; keeps the Gram product in range
        gram = x.T @ x if x.shape[1] <= x.shape[0] else x @ x.T
        return gram_entropy(gram, order)


def layer_entropies(activations: Mapping[str, torch.Tensor], order: int = 2,
                    max_tokens: int | None = None) -> dict[str, torch.Tensor]:
    """Entropy of each module's activations; a tensor several modules read is computed once."""
    done: dict[int, torch.Tensor] = {}
    out = {}
    for name, x in activations.items():
        if id(x) not in done:
            done[id(x)] = activation_entropy(x, order, max_tokens)
        out[name] = done[id(x)]
    return out


def entropy_penalty(activations: Mapping[str, torch.Tensor], order: int = 2, max_tokens: int | None = None) -> torch.Tensor:
    """H̄: the mean over modules of their activation entropy (nats), differentiable."""
    if not activations:
        raise ValueError("entropy_penalty: no activations collected (was the collector active during the forward pass?)")
    return torch.stack(list(layer_entropies(activations, order, max_tokens).values())).mean()


def add_entropy_term(loss: torch.Tensor, activations: Mapping[str, torch.Tensor], lambda_: float, order: int = 2,
                     max_tokens: int | None = None) -> torch.Tensor:
    """loss − λ·H̄; with λ == 0 the very same `loss` tensor, and H̄ is never computed."""
    if lambda_ == 0:
        return loss
    return loss - lambda_ * entropy_penalty(activations, order, max_tokens)


# --------------------------------------------------------------------------------------------
# Collecting activations


def resolve_modules(model: torch.nn.Module, names: Iterable[str]) -> dict[str, torch.nn.Module]:
    """The modules called `names`, also inside wrappers (peft's `base_model.model.`, DDP's `module.`)."""
    modules = dict(model.named_modules())
    out = {}
    for name in names:
        if name in modules:
            out[name] = modules[name]
            continue
        found = [m for full, m in modules.items() if full.endswith("." + name)]
        if len(found) != 1:
            raise KeyError(f"{name}: {'no' if not found else len(found)} module of the model has this name")
        out[name] = found[0]
    return out


class ActivationCollector:
    """Forward hooks that keep each named module's latest input (or output) while the context is open.

    `activations` maps module name to the tensor of the last forward call (graph attached, so a loss
    term built from it back-propagates); `active = False` makes the hooks store nothing; `clear()`
    drops the references. Hooks are removed on exit.
    """

    def __init__(self, model: torch.nn.Module, names: Iterable[str], side: Side = "input", active: bool = True) -> None:
        if side not in ("input", "output"):
            raise ValueError(f"side must be input or output, got {side!r}")
        self.modules = resolve_modules(model, names)
        self.side = side
        self.active = active
        self.activations: dict[str, torch.Tensor] = {}
        self._handles: list[torch.utils.hooks.RemovableHandle] = []

    def _hook(self, name: str) -> Callable[..., None]:
        def hook(module: torch.nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
            if not self.active:
                return
            if self.side == "input":
                x = args[0] if args else next(iter(kwargs.values()))
            else:
                x = output[0] if isinstance(output, tuple) else output
            self.activations[name] = x

        return hook

    def clear(self) -> None:
        self.activations.clear()

    @torch.no_grad()
    def entropies(self, order: int = 2, max_tokens: int | None = None) -> dict[str, float]:
        """Entropy of each module's last collected activations, as floats (for logging)."""
        return {name: float(h) for name, h in layer_entropies(self.activations, order, max_tokens).items()}

    def attach(self) -> ActivationCollector:
        """Register the hooks (what entering the context does)."""
        if not self._handles:
            for name, module in self.modules.items():
                self._handles.append(module.register_forward_hook(self._hook(name), with_kwargs=True))
        return self

    def detach(self) -> None:
        """Remove the hooks and drop the activations (what leaving the context does)."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self.clear()

    def __enter__(self) -> ActivationCollector:
        return self.attach()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.detach()


def _centred_gram(x: torch.Tensor) -> torch.Tensor:
    with torch.autocast(device_type=x.device.type, enabled=False):
        x = x.reshape(-1, x.shape[-1]).float()
        x = x - x.mean(dim=0, keepdim=True)
        return (x.T @ x).to("cpu", torch.float64)


def _width(module: torch.nn.Module, side: Side) -> int:
    attr = "in_features" if side == "input" else "out_features"
    if hasattr(module, attr):
        return int(getattr(module, attr))
    out_dim, in_dim = module.weight.shape[:2]
    return int(in_dim if side == "input" else out_dim)


@torch.no_grad()
def measure_entropy(model: torch.nn.Module, names: list[str], batches: Iterable[Any],
                    forward_fn: Callable[[torch.nn.Module, Any], Any], side: Side = "input",
                    order: int = 2, max_bytes: int = 2**30) -> dict[str, float]:
    """Activation entropy (nats) of each named module over calibration `batches`.

    `forward_fn(model, batch)` runs one forward pass (its result is ignored); the model is in eval
    mode meanwhile. Covariances are pooled over the batches, each batch centred on its own mean.
    When the modules' d×d float64 sums would pass `max_bytes`, the modules are measured in groups,
    one pass over the batches per group.
    """
    batches = list(batches)
    if not batches:
        raise ValueError("measure_entropy: no calibration batch")
    modules = resolve_modules(model, names)
    groups: list[list[str]] = [[]]
    used = 0
    for name in names:
        need = 8 * _width(modules[name], side) ** 2
        if groups[-1] and used + need > max_bytes:
            groups.append([])
            used = 0
        groups[-1].append(name)
        used += need
    was_training = model.training
    model.eval()
    out: dict[str, float] = {}
    try:
        for group in groups:
            out.update(_measure_group(model, group, batches, forward_fn, side, order))
    finally:
        model.train(was_training)
    return {name: out[name] for name in names}


def _measure_group(model: torch.nn.Module, names: list[str], batches: list[Any],
                   forward_fn: Callable[[torch.nn.Module, Any], Any], side: Side, order: int) -> dict[str, float]:
    grams: dict[str, torch.Tensor] = {}
    owner: dict[str, str] = {}  # module -> the first module reading the same tensor (itself if none)
    with ActivationCollector(model, names, side) as collector:
        for batch in batches:
            collector.clear()
            forward_fn(model, batch)
            first_reader: dict[int, str] = {}
            for name in names:
                if name not in collector.activations:
                    raise RuntimeError(f"measure_entropy: the forward pass never called {name}")
                x = collector.activations[name]
                first = first_reader.setdefault(id(x), name)
                if owner.setdefault(name, first) != first:
                    raise RuntimeError(f"measure_entropy: {name} shares its {side} with different modules in different batches")
                if first == name:
                    gram = _centred_gram(x)
                    if name in grams:
                        grams[name] += gram
                    else:
                        grams[name] = gram
            collector.clear()
    per_owner = {name: float(gram_entropy(gram, order)) for name, gram in grams.items()}
    return {name: per_owner[owner[name]] for name in names}


# --------------------------------------------------------------------------------------------
# Rank allocation


def allocate_ranks(entropies: Mapping[str, float], budget: int, r_min: int = 1, r_max: int | None = None) -> dict[str, int]:
    """Ranks summing exactly to `budget`, each in [r_min, r_max], proportional to entropy (module docstring)."""
    names = list(entropies)
    n = len(names)
    if n == 0:
        raise ValueError("allocate_ranks: no modules to allocate ranks to")
    if r_min < 1:
        raise ValueError(f"allocate_ranks: r_min must be at least 1, got {r_min}")
    if r_max is not None and r_max < r_min:
        raise ValueError(f"allocate_ranks: r_max {r_max} is below r_min {r_min}")
    if budget < r_min * n:
        raise ValueError(f"allocate_ranks: budget {budget} is below r_min × modules = {r_min} × {n} = {r_min * n}")
    if r_max is not None and budget > r_max * n:
        raise ValueError(f"allocate_ranks: budget {budget} is above r_max × modules = {r_max} × {n} = {r_max * n}")
    weights = [float(entropies[k]) for k in names]
    for name, w in zip(names, weights, strict=True):
        if not math.isfinite(w) or w < 0:
            raise ValueError(f"allocate_ranks: entropy of {name} must be finite and non-negative, got {w}")
    hi = float(r_max if r_max is not None else budget - r_min * (n - 1))
    top = max(weights)
    # Strictly positive weights (order kept) so c can lift every module up to r_max; all zero -> uniform.
    weights = [w + 1e-9 * top for w in weights] if top > 0 else [1.0] * n

    def total(c: float) -> float:
        return sum(min(hi, max(r_min, c * w)) for w in weights)

    lo_c, hi_c = 0.0, 1.0
    while total(hi_c) < budget:
        hi_c *= 2
    for _ in range(200):
        mid = (lo_c + hi_c) / 2
        if total(mid) <= budget:
            lo_c = mid
        else:
            hi_c = mid
    shares = [min(hi, max(r_min, lo_c * w)) for w in weights]  # Σ shares <= budget, by a rounding error at most
    ranks = [math.floor(s) for s in shares]
    left = budget - sum(ranks)
    order = sorted(range(n), key=lambda i: (-(shares[i] - ranks[i]), -weights[i], i))
    while left > 0:
        for i in order:
            if left == 0:
                break
            if ranks[i] < hi:
                ranks[i] += 1
                left -= 1
    return dict(zip(names, ranks, strict=True))


def sharpen(entropies: Mapping[str, float], gamma: float) -> dict[str, float]:
    """Allocation weights entropy^γ (γ = 1 leaves them as they are; γ = 0 makes every weight 1)."""
    if gamma == 1:
        return dict(entropies)
    return {name: float(h) ** gamma for name, h in entropies.items()}


def rank_spread(ranks: Mapping[str, float]) -> dict[str, float]:
    """min, max and Gini coefficient of an allocation (0 = every module the same rank; → 1 = all in one).

    Gini = Σ_i Σ_j |r_i − r_j| / (2 n² mean): the mean absolute difference between two modules' ranks,
    relative to twice the mean rank.
    """
    values = np.array([float(r) for r in ranks.values()], dtype=float)
    if values.size == 0:
        raise ValueError("rank_spread: no ranks")
    mean = values.mean()
    gini = float(np.abs(values[:, None] - values[None, :]).sum() / (2 * values.size**2 * mean)) if mean > 0 else 0.0
    return {"min": float(values.min()), "max": float(values.max()), "gini": gini}


def lora_rank_pattern(ranks: Mapping[str, int]) -> dict[str, int]:
    """peft `LoraConfig(rank_pattern=...)` for full module names, each key matching exactly its own module.

    peft 0.21 matches a key as the regex `(.*\\.)?(KEY)$` against each module's name in the base
    model and takes the first key that matches; a bare name would also match longer names ending
    in it, and its dots match any character. So each name is escaped and anchored with `^`, which
    forces the optional prefix group to be empty: the key matches that one full name only.
    """
    return {f"^{re.escape(name)}": int(r) for name, r in ranks.items()}


# --------------------------------------------------------------------------------------------
# Logging

_KIND_ROWS = ["q", "k", "v", "out", "fc1", "fc2", "x.q", "x.k", "x.v", "x.out"]
_LAYER = re.compile(r"(?:^|\.)(encoder|decoder)\.layers\.(\d+)\.(.+)$")
_STACK_ABBREV = {"encoder": "enc", "decoder": "dec"}


def module_position(name: str) -> tuple[str, str, int] | None:
    """(kind, stack, layer index) of an adapted module's full name, e.g. ("x.k", "decoder", 1); None if unknown."""
    match = _LAYER.search(name)
    if match is None:
        return None
    stack, index, rest = match.group(1), int(match.group(2)), match.group(3)
    for family in MODULE_KINDS.values():
        for kind, module in family.items():
            if rest == module or rest.endswith("." + module):
                return ("x." + kind if rest.startswith("encoder_attn.") else kind), stack, index
    return None


def short_name(name: str) -> str:
    """A compact name for metrics: `enc3.q`, `dec1.x.k` (cross-attention), or the full name if unknown."""
    pos = module_position(name)
    if pos is None:
        return name
    kind, stack, index = pos
    return f"{_STACK_ABBREV[stack]}{index}.{kind}"


def entropy_metrics(values: Mapping[str, float | torch.Tensor], prefix: str = "entropy") -> dict[str, float]:
    """Flat metrics `<prefix>/<short name>` for each module, plus `<prefix>/mean`."""
    out = {f"{prefix}/{short_name(name)}": float(v) for name, v in values.items()}
    if values:
        out[f"{prefix}/mean"] = sum(float(v) for v in values.values()) / len(values)
    return out


def entropy_heatmap(values: Mapping[str, float], path: str | Path, title: str | None = None) -> Path:
    """Write a PNG heatmap of per-module values (ranks or entropies): module kind × stack and layer."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    cells: dict[tuple[str, str], float] = {}
    columns: list[tuple[int, int, str]] = []
    for name, value in values.items():
        pos = module_position(name)
        kind, column = (pos[0], f"{_STACK_ABBREV[pos[1]]} {pos[2]}") if pos else (name, "other")
        key = (0 if pos and pos[1] == "encoder" else 1 if pos else 2, pos[2] if pos else 0, column)
        if key not in columns:
            columns.append(key)
        cells[(kind, column)] = float(value)
    columns.sort()
    col_labels = [c[2] for c in columns]
    kinds = {k for k, _ in cells}
    row_labels = [k for k in _KIND_ROWS if k in kinds] + sorted(kinds - set(_KIND_ROWS))
    data = np.full((len(row_labels), len(col_labels)), np.nan)
    for (kind, column), value in cells.items():
        data[row_labels.index(kind), col_labels.index(column)] = value
    integers = all(float(v).is_integer() for v in cells.values())

    fig = Figure(figsize=(1.2 + 0.55 * len(col_labels), 1.0 + 0.4 * len(row_labels)), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    image = ax.imshow(data, cmap="viridis", aspect="auto")
    fig.colorbar(image, ax=ax, fraction=0.05, pad=0.02)
    finite = data[np.isfinite(data)]
    middle = (finite.min() + finite.max()) / 2 if finite.size else 0.0
    for i in range(len(row_labels)):
        for j in range(len(col_labels)):
            v = data[i, j]
            if v == v:  # not NaN: the module exists
                ax.text(j, i, f"{v:.0f}" if integers else f"{v:.2f}", ha="center", va="center", fontsize=7,
                        color="black" if v > middle else "white")
    ax.set_xticks(range(len(col_labels)), col_labels, rotation=90 if len(col_labels) > 12 else 0, fontsize=8)
    ax.set_yticks(range(len(row_labels)), row_labels, fontsize=8)
    ax.set_xlabel("stack and layer")
    ax.set_ylabel("module kind (x. = cross-attention)")
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path
