"""``trace-usage bench``: time this project against weave 0.53.12 on the same traces.

Runs :mod:`benchmarks.run` (needs the ``test`` and ``bench`` extras: the reference server,
psutil); prints the table and writes ``results.json`` and ``results.md`` to ``--out``.
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

from service.commands import missing_extra


def _sizes(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(part.replace("_", "")) for part in text.split(",") if part.strip())
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"sizes are comma-separated integers: {text!r}") from err
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError("sizes must be positive")
    return sizes


def _only(text: str) -> str:
    letters = "".join(part.strip() for part in text.split(","))
    if not letters or set(letters) - set("abcdef"):
        raise argparse.ArgumentTypeError("--only takes letters among a,b,c,d,e,f")
    return letters


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``bench`` subcommand."""
    parser = subparsers.add_parser(
        "bench",
        help="benchmark against the reference (weave 0.53.12)",
        description="(a) rollup core, (b) engine trace_usage, (c) HTTP /trace/usage, "
        "(d) service peak RSS, (e) load test, (f) small traces over the floor and wrk; each "
        "against the reference where it has one.",
    )
    parser.add_argument(
        "--sizes",
        type=_sizes,
        default=None,
        help="trace sizes for (a) and (b), e.g. 1000,10000,100000 (default: 1k to 1M for "
        "(a), 1k to 100k for (b))",
    )
    parser.add_argument("--quick", action="store_true", help="small sizes, few runs")
    parser.add_argument(
        "--only", type=_only, default="abcdef", help="which benchmarks, e.g. a,b (default all)"
    )
    parser.add_argument("--out", type=Path, default=None, help="results directory")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the benchmarks; exit code 1 when a target is missed."""
    try:
        from benchmarks.run import RESULTS_DIR, Plan
        from benchmarks.run import run as run_benchmarks
    except ModuleNotFoundError as err:
        raise missing_extra(err, "test,bench") from err

    plan = Plan.quick(args.only) if args.quick else Plan(only=args.only)
    if args.sizes:
        plan = replace(plan, rollup_sizes=args.sizes, engine_sizes=args.sizes)
    results = run_benchmarks(plan, args.out or RESULTS_DIR)
    return 1 if any(r.met is False for r in results) else 0
