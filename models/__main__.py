"""`python -m models train [--out DIR] [--check]` · `python -m models bench`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m models", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="train the models on the simulator and write ONNX + cards")
    train.add_argument("--out", type=Path, default=None, help="folder to write (default models/artifacts)")
    train.add_argument(
        "--check",
        action="store_true",
        help="retrain into a temporary folder and compare metrics with the cards in --out",
    )
    bench = sub.add_parser("bench", help="in-process inference latency of the shipped models")
    bench.add_argument("--calls", type=int, default=10_000)
    args = parser.parse_args(argv)

    if args.command == "train":
        from models import train as training  # needs the `train` extra

        out = args.out or training.ARTIFACTS
        if args.check:
            return training.check(out)
        training.train(out)
        return 0
    from models.bench import bench as run_bench

    run_bench(args.calls)
    return 0


if __name__ == "__main__":
    sys.exit(main())
