"""Export a trial's result as a model folder: `python -m platform.export RUN OUT_DIR [--adapter-only]` (see --help).

RUN is an MLflow run id (a trial's, or a sweep's parent run, which stands for its best trial) or a trial's
artifact folder. What is written depends on the method: a standard transformers folder where the result is
one (QLoRA: the adapter merged into its base at 16-bit, loadable by transformers.pipeline), else the model as
it is with a standalone loader; the last line printed says which.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from platform.trials import RunError, resolve


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m platform.export", description=__doc__.split("\n\n")[0])
    p.add_argument("run", metavar="RUN", help="MLflow run id (a trial's or a sweep's parent run) or a trial's artifact folder")
    p.add_argument("out_dir", metavar="OUT_DIR", help="a new (or empty) folder to write the model to")
    p.add_argument("--adapter-only", action="store_true", help="only the adapter (peft layout), naming the base model it goes on")
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI or sqlite:///mlflow.db)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out = Path(args.out_dir).expanduser()
    try:
        if out.exists() and (not out.is_dir() or any(out.iterdir())):
            raise ValueError(f"OUT_DIR {out}: exists and is not empty; name a new folder")
        result = resolve(args.run, args.tracking_uri)
    except (RunError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    import transformers

    from trainables import load_method
    from trainables.blocks.config import ConfigError
    from trainables.blocks.inference import ArtifactError

    transformers.logging.set_verbosity_error()  # its generation notices are not the user's business here

    created = not out.exists()
    try:
        described = load_method(result.method).export(result.path, out, adapter_only=args.adapter_only)
    except BaseException as exc:
        if created:  # leave no half-written folder behind
            shutil.rmtree(out, ignore_errors=True)
        if not isinstance(exc, (ArtifactError, ConfigError)):
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"exported {result.method} trial {result.label}", file=sys.stderr)
    print(described)
    return 0


if __name__ == "__main__":
    sys.exit(main())
