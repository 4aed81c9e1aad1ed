"""``python -m benchmarks run [--quick] [--only NAMES] [--device cpu|cuda]``: the benchmark suite.

Each benchmark measures LSC against its baseline in the same run (ratios), prints a table and adds a section to
``benchmarks/results/suite[-quick]-<device>.json``; the plot goes beside it as ``.png``. See ``runner.py``.
"""

from __future__ import annotations

import argparse
import sys

from .runner import BENCHMARKS, DEFAULT, run_suite


def parse_overrides(items: list[str]) -> dict[str, dict]:
    """``NAME.FIELD=VALUE`` strings as ``run_suite`` overrides, each value converted to the field's type."""
    import dataclasses
    import shlex
    import typing

    overrides: dict[str, dict] = {}
    for item in items:
        target, sep, text = item.partition("=")
        name, _, field = target.partition(".")
        if not sep or name not in BENCHMARKS or not field:
            raise ValueError(f"--set {item!r}: expected NAME.FIELD=VALUE with NAME one of {', '.join(BENCHMARKS)}")
        config = BENCHMARKS[name].config
        types = typing.get_type_hints(config)
        if field not in {f.name for f in dataclasses.fields(config)}:
            raise ValueError(f"--set {item!r}: {name} has no field {field!r}")
        tp = types[field]
        if typing.get_origin(tp) is tuple:
            inner = typing.get_args(tp)[0]
            value = tuple(inner(v) for v in shlex.split(text))
        elif tp is bool:
            value = text.lower() in ("1", "true", "yes")
        else:
            value = next((t(text) for t in (int, float, str) if t in (*typing.get_args(tp), tp)), text)
        overrides.setdefault(name, {})[field] = value
    return overrides


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
    run.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME.FIELD=VALUE",
        help="replace a field of a benchmark's config, repeatable (tuples: space-separated), e.g. "
        '--set "realdata.extra=--aug randaugment --mixup 0.2"',
    )
    run.add_argument("--tag", default="", help="added to the result file's name (runs with --set)")
    sub.add_parser("list", help="list the benchmarks")
    args = parser.parse_args(argv)
    if args.command == "list":
        for name, bench in BENCHMARKS.items():
            print(f"{name:14s} {bench.title}{'' if bench.default else '  (only with --only)'}")
        return 0
    names = tuple(n.strip() for n in args.only.split(",") if n.strip())
    if unknown := [n for n in names if n not in BENCHMARKS]:
        parser.error(f"unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}")
    try:
        overrides = parse_overrides(args.set)
    except ValueError as exc:
        parser.error(str(exc))
    run_suite(
        names,
        quick=args.quick,
        device=args.device,
        overrides=overrides,
        plot=not args.no_plot,
        command=" ".join(["python -m benchmarks", *argv]),
        tag=args.tag,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
