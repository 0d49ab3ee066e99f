"""Export a trial's result as a model folder, or register it as an MLflow model: `python -m platform.export RUN
[OUT_DIR] [--adapter-only] [--register NAME]` (see --help).

RUN is an MLflow run id (a trial's, or a sweep's parent run, which stands for its best trial) or a trial's
artifact folder. What is written depends on the method: a standard transformers folder where the result is
one (QLoRA: the adapter merged into its base at 16-bit, loadable by transformers.pipeline), else the model as
it is with a standalone loader; the last line printed says which. `--register NAME` logs the trial's result as
an MLflow model in its run and registers it under NAME (platform/registry.py; served with
`mlflow models serve -m models:/NAME/VERSION --env-manager local`, see docs/serving.md).
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from platform import registry, tracking
from platform.cluster import ROOT
from platform.trials import RunError, TrialResult, resolve


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m platform.export", description=__doc__.split("\n\n")[0])
    p.add_argument("run", metavar="RUN", help="MLflow run id (a trial's or a sweep's parent run) or a trial's artifact folder")
    p.add_argument("out_dir", metavar="OUT_DIR", nargs="?",
                   help="a new (or empty) folder to write the model to (optional with --register)")
    p.add_argument("--adapter-only", action="store_true", help="only the adapter (peft layout), naming the base model it goes on")
    p.add_argument("--register", metavar="NAME",
                   help="also log the trial's result as an MLflow model in its run and register it under NAME "
                        "(a new version if NAME exists); RUN must be an MLflow run id")
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI or sqlite:///mlflow.db)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out = Path(args.out_dir).expanduser() if args.out_dir is not None else None
    try:
        if out is None and args.register is None:
            raise ValueError("OUT_DIR: name a folder to export to, or register the trial with --register NAME")
        if out is None and args.adapter_only:
            raise ValueError("--adapter-only: exports to OUT_DIR; name one")
        if out is not None and out.exists() and (not out.is_dir() or any(out.iterdir())):
            raise ValueError(f"OUT_DIR {out}: exists and is not empty; name a new folder")
        if args.register is not None:
            registry.check_name(args.register)
        result = resolve(args.run, args.tracking_uri)
        if args.register is not None and result.run_id is None:
            raise ValueError(f"RUN {result.label}: --register needs the trial's MLflow run id (a folder has no run "
                             "to link the model to)")
    except (RunError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if out is not None:
        code = _export(result, out, args.adapter_only)
        if code != 0 or args.register is None:
            return code
    return _register(result, args.register, args.tracking_uri)


def _export(result: TrialResult, out: Path, adapter_only: bool) -> int:
    import transformers

    from trainables import load_method
    from trainables.blocks.config import ConfigError
    from trainables.blocks.inference import ArtifactError

    transformers.logging.set_verbosity_error()  # its generation notices are not the user's business here

    created = not out.exists()
    try:
        described = load_method(result.method).export(result.path, out, adapter_only=adapter_only)
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


def _register(result: TrialResult, name: str, tracking_uri: str | None) -> int:
    from mlflow.exceptions import MlflowException

    uri = tracking_uri or tracking.default_tracking_uri(ROOT)
    try:
        registered = registry.register(result, name, uri)
    except (registry.RegistryError, MlflowException, OSError) as exc:
        line = " ".join(str(exc).split())[:500]
        print(f"error: registering {result.method} trial {result.label} as {name!r}: {line}", file=sys.stderr)
        return 2
    print(f"registered {result.method} trial {result.label} as {registered.uri} (MLflow model {registered.model_id})",
          file=sys.stderr)
    print(f"{registered.uri}: serve it with `mlflow models serve -m {registered.uri} --env-manager local` from the "
          f"repository root; POST /invocations {registry.REQUEST}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
