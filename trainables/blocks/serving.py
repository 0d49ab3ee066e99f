"""A trial's result as an MLflow model: a pyfunc around its method's recogniser, for every method.

`platform.registry` logs it; `mlflow models serve` loads it in a server process, where this module arrives in
the model's own copy of `trainables/` (its `code_paths`). The request format is the same for every method:
a DataFrame column `audio` of sound files (WAV or FLAC bytes; over HTTP, base64 in JSON), any sample rate,
mono or not; the answer is a column `text`, one transcript per row, decoded exactly as `platform.transcribe`
decodes (the method's own task, on audio cut into the window the trial trained with).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import mlflow.pyfunc
import pandas as pd

AUDIO = "audio"
"""The input column: one sound file's bytes per row."""
TEXT = "text"
"""The output column: one transcript per row."""
TRIAL = "trial"
"""The model's artifact holding the trial's artifact folder (what the method's `recogniser` reads)."""
METHOD = "method"
"""The model's artifact naming the method (a JSON file {"method": name})."""


def signature() -> Any:
    """Input: a binary column `audio` (the server base64-decodes it); output: a string column `text`."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    return ModelSignature(inputs=Schema([ColSpec("binary", AUDIO)]), outputs=Schema([ColSpec("string", TEXT)]))


class SpeechToText(mlflow.pyfunc.PythonModel):
    """Sound files in, transcripts out, through the recogniser of the method its METHOD artifact names."""

    def __init__(self) -> None:
        self._recogniser: Any = None

    def load_context(self, context: Any) -> None:
        """Load the trial's result once, when the model is loaded: on CUDA where there is one (as
        `platform.transcribe` does), else on the CPU."""
        import json

        import torch
        import transformers

        from trainables import load_method

        transformers.logging.set_verbosity_error()  # its generation notices would fill the server's log
        method = json.loads(Path(context.artifacts[METHOD]).read_text())["method"]
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self._recogniser = load_method(method).recogniser(Path(context.artifacts[TRIAL]), device)

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        from mlflow.exceptions import MlflowException
        from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

        from trainables.blocks.audio import decode_audio

        if AUDIO not in model_input.columns:
            raise MlflowException(f"the input needs a column {AUDIO!r} (sound files' bytes), got "
                                  f"{list(model_input.columns)}", error_code=INVALID_PARAMETER_VALUE)
        clips = []
        for row, data in enumerate(model_input[AUDIO]):
            try:
                clip = decode_audio(bytes(data))
            except Exception as exc:  # noqa: BLE001 - soundfile raises several types for unreadable bytes
                reason = re.sub(r"^Error opening <[^>]*>: ", "", " ".join(str(exc).split())) or type(exc).__name__
                raise MlflowException(f"row {row}: unreadable audio ({reason}); send WAV or FLAC bytes, base64 in JSON",
                                      error_code=INVALID_PARAMETER_VALUE) from None
            if clip.size == 0:
                raise MlflowException(f"row {row}: the sound file holds no audio", error_code=INVALID_PARAMETER_VALUE)
            clips.append(clip)
        texts = self._recogniser.transcribe(clips) if clips else []
        return pd.DataFrame({TEXT: texts})
