"""Benchmark: what asking a child about a user's path costs (agent/resources/fsprobe.py).

    GUESTHA_BENCH_PYTHON=$GUESTHA_AGENT_PYTHON hack/bench/run fsprobe [--trials 50] [--out F]

The agent never resolves a user's path itself (a dead mount would hang it): a Mount's
monitor, an Application's pid files and a Process's start each ask a short-lived child.
This measures that child as the agent would run it, with the interpreter running this
script (run it with the guests' Python): `look` (python3 -I -S: realpath and stat of
two paths) and `check_start` (/bin/sh as the resource's user: enter a directory, find a
command on PATH). Prints JSON: median, p95 and trial count in milliseconds.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from bench.stats import summary
from guestha.agent.resources import fsprobe
from guestha.agent.resources.programs import DEFAULT_PATH


def main() -> None:
    parser = argparse.ArgumentParser(prog="hack/bench/run fsprobe",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=50)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    look, check = [], []
    for _ in range(args.trials):  # alternated, so that drift hits both alike
        began = time.monotonic()
        fsprobe.look(["/tmp", "/dev/null"], 10, "bench")
        look.append((time.monotonic() - began) * 1000)
        began = time.monotonic()
        fsprobe.check_start("/tmp", "sleep", DEFAULT_PATH, 10, "bench")
        check.append((time.monotonic() - began) * 1000)
    result = {"python": sys.version.split()[0], "unit": "ms",
              "look": summary(look), "check_start": summary(check)}
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
