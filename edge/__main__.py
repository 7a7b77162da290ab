"""`python -m edge serve --origin URL --region NAME --data DIR`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m edge")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="serve an edge for one region")
    serve.add_argument("--origin", required=True, help="the origin's base URL")
    serve.add_argument("--region", required=True)
    serve.add_argument("--data", type=Path, required=True, help="holds the replica and outbox")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8100)
    serve.add_argument("--insecure-dev", action="store_true", help="run with throwaway secrets")
    serve.add_argument("--log-level", default="info")
    args = parser.parse_args(argv)

    import logging

    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )

    from edge.app import create_app
    from edge.settings import EdgeSettings
    from sync import server

    settings = EdgeSettings.from_env(
        origin_url=args.origin,
        region=args.region,
        data_dir=args.data,
        insecure_dev=args.insecure_dev,
        freeze_heap=True,
    )
    if args.insecure_dev:
        print("edge: --insecure-dev: running with throwaway secrets", file=sys.stderr)
    server.run(create_app(settings), host=args.host, port=args.port, log_level=args.log_level)
    return 0


if __name__ == "__main__":
    sys.exit(main())
