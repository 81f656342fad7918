"""Fetch the flag set once and write it as a bootstrap snapshot for a deployment package.

    ANALEMMA_SDK_KEY=ask_prod_... python -m analemma_sdk.flags snapshot --url URL --out flags.json

The key is read from an environment variable (``--key-env``, ANALEMMA_SDK_KEY by default), never
from the command line, so it stays out of shell history and process lists."""

from __future__ import annotations

import argparse
import os
import sys

from .client import FlagClient


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m analemma_sdk.flags", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    snapshot = sub.add_parser("snapshot", help="write the current flag set to a JSON file")
    snapshot.add_argument("--url", required=True, help="the service's base URL")
    snapshot.add_argument("--key-env", default="ANALEMMA_SDK_KEY", help="variable holding the SDK key")
    snapshot.add_argument("--out", required=True, help="where to write the snapshot")
    snapshot.add_argument("--timeout", type=float, default=10.0)
    args = parser.parse_args(argv)
    key = os.environ.get(args.key_env)
    if not key:
        sys.stderr.write(f"{args.key_env} is not set\n")
        return 2
    client = FlagClient(args.url, key, cache_path=None, timeout=args.timeout)
    if not client.refresh() or not client.snapshot(args.out):
        sys.stderr.write(f"no flag set: {client.status.error}\n")
        return 1
    sys.stdout.write(f"revision {client.revision} of {client.environment} written to {args.out}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
