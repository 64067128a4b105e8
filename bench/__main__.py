"""Run the benchmarks and print one JSON object per line."""

from __future__ import annotations

import argparse
import importlib
import json
import pathlib
import sys


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("--only", help="run only bench/bench_ONLY.py")
    args = parser.parse_args()
    here = pathlib.Path(__file__).parent
    names = sorted(path.stem.removeprefix("bench_") for path in here.glob("bench_*.py"))
    if args.only:
        if args.only not in names:
            print(f"bench: no benchmark {args.only!r}; known: {', '.join(names)}", file=sys.stderr)
            return 2
        names = [args.only]
    for name in names:
        module = importlib.import_module(f"bench.bench_{name}")
        for result in module.run():
            print(json.dumps(result, sort_keys=True), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
