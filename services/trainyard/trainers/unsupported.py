"""The stand-in trainer of the model types this version cannot train yet:
`python -m trainyard.trainers.unsupported --kind ndb`.

It reports the training failed with a clear error and exits 1, so an accepted request for such
a model ends `failed` with a reason its owner can read, instead of waiting forever.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Mapping, Sequence

from trainyard.workload import ConfigError, Reporter, ReportError, load_config

PROG = "trainyard.trainers.unsupported"


async def run(kind: str, environ: Mapping[str, str]) -> int:
    message = f"{kind} training is not yet supported by this Trainyard version"
    print(f"{PROG}: {message}", file=sys.stderr, flush=True)
    try:
        await load_config(environ)  # takes the platform's part of the config (the reporter's)
    except ConfigError as exc:
        print(f"{PROG}: bad config: {exc}", file=sys.stderr, flush=True)
    try:
        async with Reporter.from_env(environ) as reporter:
            await reporter.log("error", message)
            await reporter.status("failed")
    except (ReportError, ValueError) as exc:
        print(f"{PROG}: cannot report: {exc}", file=sys.stderr, flush=True)
    return 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=PROG)
    parser.add_argument("--kind", required=True, help="the train endpoint's kind, e.g. ndb")
    args = parser.parse_args(argv)
    return asyncio.run(run(args.kind, os.environ))


if __name__ == "__main__":
    sys.exit(main())
