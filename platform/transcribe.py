"""Transcribe audio with a trial's result: `python -m platform.transcribe RUN FILES_OR_FOLDER...` (see --help).

RUN is an MLflow run id (a trial's, or a sweep's parent run, which stands for its best trial) or a trial's
artifact folder. Prints `path<TAB>transcript` per audio file; where the audio has transcripts (same-stem .txt
files, transcripts.tsv or metadata.csv, as data folders have them) it also prints the WER over those files.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from platform.trials import RunError, resolve


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m platform.transcribe", description=__doc__.split("\n\n")[0])
    p.add_argument("run", metavar="RUN", help="MLflow run id (a trial's or a sweep's parent run) or a trial's artifact folder")
    p.add_argument("inputs", metavar="FILES_OR_FOLDER", nargs="+", help="audio files, or folders searched for .wav/.flac files")
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI or sqlite:///mlflow.db)")
    p.add_argument("--device", help="torch device (default: cuda if there is one, else cpu)")
    p.add_argument("--beams", type=int, default=1, metavar="N",
                   help="beam search with N beams for sequence-to-sequence results (default 1: greedy, as the trial "
                        "was evaluated; 5 decodes as transformers' ASR pipeline does by default)")
    return p.parse_args(argv)


def set_beams(recogniser: object, beams: int) -> None:
    """Decode with `beams` beams: the generation config of the recogniser's model (a `TaskRecogniser`'s)."""
    from trainables.blocks.training import unwrap

    model = getattr(recogniser, "model", None)
    inner = unwrap(model, peft=True) if model is not None else None
    config = getattr(inner, "generation_config", None) if inner is not None and hasattr(inner, "generate") else None
    if config is None:
        raise ValueError(f"--beams {beams}: this result does not decode by search (a CTC model decodes greedily)")
    config.num_beams = beams


def collect(inputs: list[str]) -> list[tuple[Path, Path]]:
    """(audio file, the folder it was found in) for every input; RunError-style ValueError for a missing one."""
    from trainables.blocks.data import audio_files

    found: list[tuple[Path, Path]] = []
    for item in inputs:
        path = Path(item).expanduser()
        if path.is_dir():
            files = audio_files(path)
            if not files:
                raise ValueError(f"{path}: no .wav or .flac files in this folder")
            found += [(f, path) for f in files]
        elif path.is_file():
            found.append((path, path.parent))
        else:
            raise ValueError(f"{path}: no such file or folder")
    return found


def read_all(files: list[Path]) -> list[np.ndarray]:
    """Every file decoded (mono float32, 16 kHz) before any model is loaded, so a bad file stops it at once."""
    from trainables.blocks.audio import decode_audio

    audio = []
    for f in files:
        try:
            clip = decode_audio(f)
        except Exception as exc:  # noqa: BLE001 - soundfile raises several types for unreadable files
            reason = " ".join(str(exc).split()) or type(exc).__name__
            raise ValueError(f"{f}: unreadable audio ({reason})") from None
        if clip.size == 0:
            raise ValueError(f"{f}: the file holds no audio")
        audio.append(clip)
    return audio


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        if args.beams < 1:
            raise ValueError(f"--beams: must be at least 1, got {args.beams}")
        result = resolve(args.run, args.tracking_uri)
        found = collect(args.inputs)
        audio = read_all([f for f, _ in found])
    except (RunError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    import torch
    import transformers
    from tqdm import tqdm

    from trainables import load_method
    from trainables.blocks.config import ConfigError
    from trainables.blocks.data import transcripts
    from trainables.blocks.inference import ArtifactError

    transformers.logging.set_verbosity_error()  # its generation notices are not the user's business here
    from trainables.blocks.metrics import error_rates

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    try:
        recogniser = load_method(result.method).recogniser(result.path, device)
        if args.beams != 1:
            set_beams(recogniser, args.beams)
    except (ArtifactError, ConfigError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"transcribing {len(audio)} file(s) with {result.method} trial {result.label} on {device}", file=sys.stderr)
    texts: list[str] = []
    step = 16
    for start in tqdm(range(0, len(audio), step), desc="transcribing", unit="batch", disable=None, file=sys.stderr):
        texts += recogniser.transcribe(audio[start : start + step])
    for (f, _), text in zip(found, texts, strict=True):
        print(f"{f}\t{text}", flush=True)
    references: list[str | None] = [None] * len(found)
    for root in dict.fromkeys(r for _, r in found):
        where = [i for i, (_, r) in enumerate(found) if r == root]
        for i, ref in zip(where, transcripts([found[i][0] for i in where], root), strict=True):
            references[i] = ref
    scored = [(ref, hyp) for ref, hyp in zip(references, texts, strict=True) if ref is not None]
    if scored:
        try:
            # scored in the trial's language (a Whisper task's data.language), as the trial scored its test set
            language = getattr(getattr(recogniser, "task", None), "language", "en")
            rates = error_rates([r for r, _ in scored], [h for _, h in scored], language)
        except ValueError:
            return 0  # every transcript was empty after normalisation: nothing to score
        print(f"WER {rates['wer']:.4f}  CER {rates['cer']:.4f}  over {len(scored)} of {len(texts)} files with transcripts")
    return 0


if __name__ == "__main__":
    sys.exit(main())
