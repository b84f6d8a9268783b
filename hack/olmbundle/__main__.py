"""`hack/bundle`: write bundle/ from the project's sources, or (--check) list what is stale."""

from __future__ import annotations

import argparse
import sys

from olmbundle import generate


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="hack/bundle", description=__doc__)
    parser.add_argument("--check", action="store_true",
                        help="write nothing; exit 1 naming the files that differ")
    args = parser.parse_args(argv)
    try:
        if args.check:
            stale = generate.stale()
            for name in stale:
                print(f"stale: bundle/{name}", file=sys.stderr)
            return 1 if stale else 0
        generate.write()
    except generate.BundleError as e:
        print(f"hack/bundle: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
