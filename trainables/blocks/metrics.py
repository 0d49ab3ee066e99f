"""Metrics every method reports: error rates, BLEU, perplexity, sizes, memory and speed.

Names follow the MLflow metric contract in DESIGN.md. Sizes are counted from the tensors a
deployment would store (packed 4-bit data and its quantisation state, int8 data and its scales,
adapters as saved), never estimated from parameter counts.
"""

from __future__ import annotations

import contextlib
import json
import math
import resource
import struct
import sys
from collections.abc import Callable, Iterator, Sequence
from functools import lru_cache
from pathlib import Path

import torch

MB = 1024 * 1024

_SAFETENSORS_ITEMSIZE = {
    "F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1,
    "F8_E4M3": 1, "F8_E5M2": 1,
}


@lru_cache(maxsize=2)
def _normalizer(english: bool) -> Callable[[str], str]:
    if english:
        from whisper_normalizer.english import EnglishTextNormalizer

        return EnglishTextNormalizer()
    from whisper_normalizer.basic import BasicTextNormalizer

    return BasicTextNormalizer()


def normalize_text(text: str, language: str = "en") -> str:
    """Whisper's normaliser: for English its English one (case, punctuation, numbers, spelling variants), for
    any other language its basic one (case, punctuation, symbols), which leaves the words as written."""
    return " ".join(_normalizer(language == "en")(text).split())


def error_rates(references: Sequence[str], hypotheses: Sequence[str],
                language: str | Sequence[str] = "en") -> dict[str, float]:
    """Corpus WER and CER (fractions) after Whisper's normalisation for `language` (one for all utterances, or
    each utterance's).

    Utterances whose normalised reference is empty are skipped, as jiwer cannot score them.
    """
    if len(references) != len(hypotheses):
        raise ValueError(f"error_rates: {len(references)} references but {len(hypotheses)} hypotheses")
    langs = [language] * len(references) if isinstance(language, str) else list(language)
    pairs = [(normalize_text(r, lang), normalize_text(h, lang))
             for r, h, lang in zip(references, hypotheses, langs, strict=True)]
    pairs = [(r, h) for r, h in pairs if r]
    if not pairs:
        raise ValueError("error_rates: no non-empty reference to score")
    refs, hyps = zip(*pairs, strict=True)
    import jiwer  # here, not at the top: the training step (EnergyMeter, sizes) imports this module where jiwer is absent

    return {"wer": float(jiwer.wer(list(refs), list(hyps))), "cer": float(jiwer.cer(list(refs), list(hyps)))}


def utterance_errors(reference: str, hypothesis: str, language: str = "en") -> tuple[int, int]:
    """(word edits, reference words) of one utterance, for per-utterance significance tests."""
    ref, hyp = normalize_text(reference, language), normalize_text(hypothesis, language)
    n_ref = len(ref.split())
    if n_ref == 0:
        return len(hyp.split()), 0
    import jiwer

    out = jiwer.process_words(ref, hyp if hyp else "")
    return out.substitutions + out.deletions + out.insertions, n_ref


def bleu(references: Sequence[str], hypotheses: Sequence[str]) -> float:
    """Corpus BLEU (sacrebleu, 0–100)."""
    import sacrebleu

    return float(sacrebleu.corpus_bleu(list(hypotheses), [list(references)]).score)


def perplexity(total_nll: float, n_tokens: int) -> float:
    """exp(mean negative log-likelihood per token)."""
    if n_tokens <= 0:
        raise ValueError("perplexity: no tokens")
    return math.exp(total_nll / n_tokens)


def peak_host_mem_mb() -> float:
    """Peak resident memory of this process (ru_maxrss is KiB on Linux, bytes on macOS)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / MB if sys.platform == "darwin" else rss / 1024


def peak_vram_mb() -> float:
    """`torch.cuda.max_memory_allocated` over this process's devices; 0 when CUDA was not used."""
    if not torch.cuda.is_available() or not torch.cuda.is_initialized():
        return 0.0
    return max(torch.cuda.max_memory_allocated(d) for d in range(torch.cuda.device_count())) / MB


def nvml_energy_reader(dev: torch.device) -> Callable[[], float] | None:
    """A function returning the total energy (mJ) NVML has counted on `dev`'s GPU since the driver loaded,
    or None where there is none to read: not CUDA, no NVML bindings (nvidia-ml-py), or a GPU older than
    Volta. The GPU is found by its UUID, which CUDA_VISIBLE_DEVICES' renumbering (Ray sets it) leaves alone."""
    if dev.type != "cuda":
        return None
    try:
        import pynvml

        pynvml.nvmlInit()
        uuid = str(torch.cuda.get_device_properties(dev).uuid)
        handle = pynvml.nvmlDeviceGetHandleByUUID(uuid if uuid.startswith("GPU-") else f"GPU-{uuid}")
        pynvml.nvmlDeviceGetTotalEnergyConsumption(handle)  # raises where the GPU has no counter
    except Exception:  # ImportError, or NVMLError of any kind: energy is then simply not reported
        return None
    return lambda: float(pynvml.nvmlDeviceGetTotalEnergyConsumption(handle))


class EnergyMeter:
    """GPU energy summed over chosen windows (a run's training steps), from a cumulative counter in mJ.

    `joules` is None when the counter cannot be read (see `nvml_energy_reader`). Two workers sharing one
    GPU would each count all of its energy; the platform gives every worker a GPU of its own.
    """

    def __init__(self, dev: torch.device, read: Callable[[], float] | None = None) -> None:
        self.dev = dev
        self.read = read if read is not None else nvml_energy_reader(dev)
        self.joules: float | None = None if self.read is None else 0.0

    @contextlib.contextmanager
    def window(self) -> Iterator[None]:
        if self.read is None:
            yield
            return
        start = self.read()
        yield
        if self.dev.type == "cuda":
            torch.cuda.synchronize(self.dev)  # the window's kernels have run before the counter is read
        self.joules += (self.read() - start) / 1000.0


def safetensors_bytes(model_dir: str | Path) -> int:
    """Bytes of the tensors stored in a checkpoint directory's safetensors files (read from headers)."""
    total = 0
    files = sorted(Path(model_dir).glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"no *.safetensors file in {model_dir}")
    for f in files:
        with open(f, "rb") as fh:
            (n,) = struct.unpack("<Q", fh.read(8))
            header = json.loads(fh.read(n))
        for name, info in header.items():
            if name != "__metadata__":
                start, end = info["data_offsets"]
                total += end - start
    return total


def safetensors_dtype_itemsize(model_dir: str | Path) -> int:
    """Item size of the floating-point tensors a checkpoint stores (2 for fp16/bf16, 4 for fp32)."""
    for f in sorted(Path(model_dir).glob("*.safetensors")):
        with open(f, "rb") as fh:
            (n,) = struct.unpack("<Q", fh.read(8))
            header = json.loads(fh.read(n))
        for name, info in header.items():
            if name != "__metadata__" and info["dtype"].startswith(("F", "BF")):
                return _SAFETENSORS_ITEMSIZE[info["dtype"]]
    raise FileNotFoundError(f"no floating-point tensor in the safetensors files of {model_dir}")


def _quantised_module_bytes(module: torch.nn.Module) -> int | None:
    """Stored bytes of a bitsandbytes layer's weight (packed data + quantisation state), else None."""
    weight = getattr(module, "weight", None)
    cls = type(weight).__name__
    if cls == "Params4bit":
        n = weight.data.numel() * weight.data.element_size()
        state = weight.quant_state
        if state is not None:
            for value in state.as_dict(packed=True).values():
                if isinstance(value, torch.Tensor):
                    n += value.numel() * value.element_size()
        return n
    if cls == "Int8Params":
        n = weight.data.numel() * weight.data.element_size()
        scb = getattr(weight, "SCB", None)
        if scb is None:
            scb = getattr(getattr(module, "state", None), "SCB", None)
        if scb is not None:
            n += scb.numel() * scb.element_size()
        return n
    return None


def deployed_size_bytes(model: torch.nn.Module, stored_itemsize: int) -> dict[str, int]:
    """Bytes of the adapted model as deployed, split into its parts.

    - ``quantised``: bitsandbytes layers, their packed weights plus quantisation state;
    - ``frozen``: other base tensors, at the checkpoint's stored precision (`stored_itemsize`),
      which is how a deployment stores them;
    - ``trained``: trainable tensors (adapters, or every weight when fully fine-tuned); adapters
      are saved as they are held (fp32), fully fine-tuned weights at the stored precision.
    Tied tensors are counted once.
    """
    parts = {"quantised": 0, "frozen": 0, "trained": 0}
    seen: set[int] = set()
    quantised_params: set[int] = set()
    for module in model.modules():
        n = _quantised_module_bytes(module)
        # peft's LoRA wrapper exposes its base layer's weight too: count each quantised weight once.
        if n is not None and id(module.weight) not in quantised_params:
            parts["quantised"] += n
            quantised_params.add(id(module.weight))
    all_trainable = all(p.requires_grad for p in model.parameters())
    for _name, p in model.named_parameters():
        if id(p) in seen or id(p) in quantised_params:
            continue
        seen.add(id(p))
        if p.requires_grad and not all_trainable:
            parts["trained"] += p.numel() * p.element_size()
        elif p.requires_grad:
            parts["trained"] += p.numel() * (stored_itemsize if p.is_floating_point() else p.element_size())
        else:
            parts["frozen"] += p.numel() * (stored_itemsize if p.is_floating_point() else p.element_size())
    parts["total"] = parts["quantised"] + parts["frozen"] + parts["trained"]
    return parts


def param_counts(model: torch.nn.Module) -> dict[str, float]:
    """Trainable and total parameter counts; 4-bit packed weights count their logical elements."""
    total = trainable = 0
    seen: set[int] = set()
    for p in model.parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        n = p.numel()
        if type(p).__name__ == "Params4bit" and p.quant_state is not None:
            n = math.prod(p.quant_state.shape)
        total += n
        if p.requires_grad:
            trainable += n
    return {"trainable_params": trainable, "total_params": total, "trainable_param_ratio": trainable / total}
