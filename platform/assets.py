"""Prepare and locate the offline assets the `local` preset and the tests use.

    python -m platform.assets prepare [--all] [NAME ...]   build (once) and print where each went
    python -m platform.assets path NAME                      print one asset's directory
    python -m platform.assets list                           what there is
"""

from __future__ import annotations

import argparse
import sys

from trainables import assets
from trainables.assets.cache import cache_root
from trainables.blocks.config import ConfigError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m platform.assets", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    prep = sub.add_parser("prepare", help="build offline assets (idempotent, cached)")
    prep.add_argument("names", nargs="*", help=f"assets to build (default: {' '.join(assets.LOCAL_ASSETS)})")
    prep.add_argument("--all", action="store_true", help="also build the optional ones (the Whisper base teacher)")
    path = sub.add_parser("path", help="print an asset's directory, building it if needed")
    path.add_argument("name", choices=sorted(assets.ASSETS))
    sub.add_parser("list", help="list the assets")
    args = parser.parse_args(argv)

    try:
        if args.command == "list":
            print(f"cache: {cache_root()}")
            for name, asset in assets.ASSETS.items():
                tag = "local preset" if name in assets.LOCAL_ASSETS else "optional"
                print(f"{name:18} {asset.kind:7} {tag:13} {asset.description} (gpu preset: {asset.hub_equivalent})")
        elif args.command == "path":
            print(assets.ASSETS[args.name].ensure())
        else:
            names = args.names or assets.LOCAL_ASSETS + (assets.OPTIONAL_ASSETS if args.all else [])
            done = assets.prepare(names, progress=lambda msg: print(msg, file=sys.stderr, flush=True))
            for name, where in done.items():
                print(f"{name}\t{where}")
    except (ConfigError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
