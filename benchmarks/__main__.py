"""`python -m benchmarks run --scenario NAME …` · `suite` · `list` · `chaos` · `fuzz`.

`serve-bare` is what the runner starts for the ceiling; it is not meant to be run by hand.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _sizes(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(x.replace("_", "")) for x in text.split(",") if x)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--sizes wants numbers separated by commas, got {text!r}") from None


def main(argv: list[str] | None = None) -> int:
    from benchmarks.scenarios import SCENARIOS

    parser = argparse.ArgumentParser(prog="python -m benchmarks")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run one scenario")
    run.add_argument("--scenario", required=True, choices=sorted(SCENARIOS))
    run.add_argument("--shipments", type=int, help="world size (the scenario's default otherwise)")
    run.add_argument("--rate", type=float, help="offered requests (or events) per second")
    run.add_argument("--duration", type=float, help="seconds of paced load")
    run.add_argument("--store", help="postgresql://… (default: a SQLite file in a temp dir)")
    run.add_argument("--origins", type=int, default=1, help="origin processes (ingest)")
    run.add_argument("--regions", type=int, default=2, help="regions in the world; one edge serves the first")
    run.add_argument("--wrk-duration", type=float, help="seconds of each wrk throughput run")
    run.add_argument("--connections", type=int, help="wrk connections (default 32; overload 1000)")
    run.add_argument("--rounds", type=int, default=3, help="wrk rounds, interleaved with the ceiling")
    run.add_argument("--no-wrk", action="store_true", help="skip the wrk (throughput) parts, saying so")
    run.add_argument("--sizes", type=_sizes, help="memory: shipments per size, e.g. 10000,100000,1000000")
    run.add_argument("--factor", type=float, default=10.0, help="burst: peak rate as a multiple of --rate")
    run.add_argument("--base-s", type=float, help="burst: seconds at the base rate before the peak")
    run.add_argument("--peak-s", type=float, help="burst: seconds at the peak (default 60)")
    run.add_argument("--after-s", type=float, help="burst: seconds at the base rate after the peak")
    run.add_argument("--probes", type=int, help="sync-lag: concurrent lag probes")
    run.add_argument(
        "--arrivals",
        choices=["even", "poisson"],
        default="even",
        help="locust scenarios: sends evenly spaced at the rate (default), or Poisson arrivals",
    )
    run.add_argument(
        "--no-allotments",
        action="store_true",
        help="route: run the edge with WAYPOST_ALLOTMENTS=0 (every hold asked of the origin first)",
    )
    run.add_argument("--results-dir", type=Path, help="default: benchmarks/results")

    suite = sub.add_parser("suite", help="the short suite `make bench` runs (about 3 minutes)")
    suite.add_argument("--results-dir", type=Path)
    suite.add_argument("--no-wrk", action="store_true")

    sub.add_parser("list", help="the scenarios")

    chaos = sub.add_parser("chaos", help="SIGKILL origin and edge under mixed load; check nothing is lost")
    chaos.add_argument("--kills", type=int, default=20, help="kill cycles (default 20, the CI length)")
    chaos.add_argument("--seed", type=int, default=1)
    chaos.add_argument("--store", help="postgresql://… (default: a SQLite file in a temp dir)")
    chaos.add_argument("--every", type=int, default=50, help="check the invariants after every N kills")
    chaos.add_argument("--max-delay", type=float, default=1.0, help="most seconds of load between kills")
    chaos.add_argument("--shipments", type=int, default=500, help="world size")
    chaos.add_argument("--keep", action="store_true", help="keep the data dirs even when every check passed")
    chaos.add_argument("--results-dir", type=Path, help="default: benchmarks/results")

    fuzz = sub.add_parser("fuzz", help="hostile requests to every endpoint of a real origin and edge")
    fuzz.add_argument("--inputs", type=int, default=100_000, help="requests to send (default 100,000)")
    fuzz.add_argument("--seed", type=int, default=1)
    fuzz.add_argument("--max-seconds", type=float, default=900.0, help="stop sending after this long")
    fuzz.add_argument("--results-dir", type=Path, help="default: benchmarks/results")

    bare = sub.add_parser("serve-bare", help=argparse.SUPPRESS)
    bare.add_argument("--host", default="127.0.0.1")
    bare.add_argument("--port", type=int, required=True)

    args = parser.parse_args(argv)
    if args.command == "serve-bare":
        from benchmarks.bare import serve

        serve(args.host, args.port)
        return 0
    command = ["python", "-m", "benchmarks", *(argv if argv is not None else sys.argv[1:])]
    if args.command == "chaos":
        from benchmarks.chaos import ChaosOptions, run_chaos

        assert args.kills >= 1 and args.every >= 1, "--kills and --every must be at least 1"
        opts = ChaosOptions(
            kills=args.kills,
            seed=args.seed,
            store=args.store,
            every=args.every,
            max_delay_s=args.max_delay,
            shipments=args.shipments,
            results_dir=args.results_dir,
            keep=args.keep,
        )
        code, _ = run_chaos(
            opts, ["python", "-m", "benchmarks", *(argv if argv is not None else sys.argv[1:])]
        )
        return code
    if args.command == "fuzz":
        from benchmarks.fuzz import FuzzOptions, run_fuzz

        fopts = FuzzOptions(
            inputs=args.inputs, seed=args.seed, max_seconds=args.max_seconds, results_dir=args.results_dir
        )
        code, _ = run_fuzz(fopts, command)
        return code
    if args.command == "list":
        for name, scenario in SCENARIOS.items():
            print(f"{name:10} {scenario.summary}")
        return 0

    from benchmarks.context import Options
    from benchmarks.runner import RESULTS, run_scenario, run_suite

    root = args.results_dir or RESULTS
    if args.command == "suite":
        return run_suite(root, no_wrk=args.no_wrk)
    assert args.origins >= 1, "--origins must be at least 1"
    options = Options(
        shipments=args.shipments,
        rate=args.rate,
        duration=args.duration,
        store=args.store,
        origins=args.origins,
        regions=args.regions,
        wrk_duration=args.wrk_duration,
        connections=args.connections,
        rounds=args.rounds,
        no_wrk=args.no_wrk,
        sizes=args.sizes,
        factor=args.factor,
        base_s=args.base_s,
        peak_s=args.peak_s,
        after_s=args.after_s,
        probes=args.probes,
        arrivals=args.arrivals,
        no_allotments=args.no_allotments,
    )
    command = ["python", "-m", "benchmarks", *(argv if argv is not None else sys.argv[1:])]
    result = run_scenario(args.scenario, options, results_root=root, command=command)
    return 1 if result.error else 0


if __name__ == "__main__":
    sys.exit(main())
