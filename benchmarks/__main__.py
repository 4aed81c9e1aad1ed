"""``python -m benchmarks run [--quick] [--only NAMES] [--device cpu|cuda]``: the benchmark suite.

Each benchmark measures LSC against its baseline in the same run (ratios), prints a table and adds a section to
``benchmarks/results/suite[-quick]-<device>.json``; the plot goes beside it as ``.png``. See ``runner.py``.
"""

from __future__ import annotations

import argparse
import sys

from .runner import BENCHMARKS, DEFAULT, run_suite


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the suite (or some of it), print tables, write JSON and a PNG")
    run.add_argument("--quick", action="store_true", help="fewer repetitions and cases (minutes on 2 CPU cores)")
    run.add_argument(
        "--only",
        default=",".join(DEFAULT),
        help=f"comma-separated benchmarks, in order (default: {','.join(DEFAULT)}; also: "
        f"{','.join(n for n in BENCHMARKS if n not in DEFAULT)})",
    )
    run.add_argument("--device", choices=["cpu", "cuda"], default=None, help="default: cuda if available")
    run.add_argument("--no-plot", action="store_true", help="skip the PNG")
    sub.add_parser("list", help="list the benchmarks")
    args = parser.parse_args(argv)
    if args.command == "list":
        for name, bench in BENCHMARKS.items():
            print(f"{name:14s} {bench.title}{'' if bench.default else '  (only with --only)'}")
        return 0
    names = tuple(n.strip() for n in args.only.split(",") if n.strip())
    if unknown := [n for n in names if n not in BENCHMARKS]:
        parser.error(f"unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}")
    run_suite(
        names,
        quick=args.quick,
        device=args.device,
        plot=not args.no_plot,
        command=" ".join(["python -m benchmarks", *argv]),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
