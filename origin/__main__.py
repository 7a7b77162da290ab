"""`python -m origin seed|serve|demo`."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from models.world import World, WorldSpec, world_now
from origin.orders import PrivacyKeys
from origin.pii import Keyring


def _store_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", type=Path, default=Path(os.environ.get("WAYPOST_DATA", "data/origin")))
    p.add_argument(
        "--store", default=os.environ.get("WAYPOST_STORE"), help="postgresql://… (default: DIR's SQLite file)"
    )


PRIVACY = ("WAYPOST_PII_KEY", "WAYPOST_POSTCODE_KEY", "WAYPOST_PII_ENCRYPTION_KEYS")


def privacy_keys() -> PrivacyKeys | None:
    """The keys seeding needs to record orders; without them it seeds shipments only."""
    pii, postcode, sealing = (os.environ.get(name) for name in PRIVACY)
    if pii and postcode and sealing:
        return PrivacyKeys(pii.encode(), postcode.encode(), keyring(sealing))
    print(
        f"origin seed: {', '.join(n for n in PRIVACY if not os.environ.get(n))} not set: seeding"
        " shipments without their orders (shoppers will not be able to unlock order details)",
        file=sys.stderr,
    )
    return None


def keyring(text: str | None) -> Keyring:
    if not text:
        raise SystemExit("origin: set WAYPOST_PII_ENCRYPTION_KEYS (see .env.example)")
    try:
        return Keyring.parse(text)
    except ValueError as exc:
        raise SystemExit(f"origin: {exc}") from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m origin")
    sub = parser.add_subparsers(dest="command", required=True)

    seed = sub.add_parser("seed", help="create or extend a deterministic world")
    _store_args(seed)
    seed.add_argument("--shipments", type=int, default=20_000)
    seed.add_argument("--regions", type=int, default=2)
    seed.add_argument("--products", type=int, default=500)
    seed.add_argument("--seed", type=int, default=7)

    serve = sub.add_parser("serve", help="serve the origin")
    _store_args(serve)
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--insecure-dev", action="store_true", help="run with throwaway secrets")
    serve.add_argument("--log-level", default="info")

    compact = sub.add_parser("compact", help="truncate the change log (edges behind re-bootstrap)")
    _store_args(compact)
    compact.add_argument("--keep-days", type=float, required=True)

    backup = sub.add_parser("backup", help="write a consistent copy of the store to DEST")
    _store_args(backup)
    backup.add_argument("dest", type=Path)

    restore = sub.add_parser("restore", help="restore a backup (stop the origin first); writes a new epoch")
    _store_args(restore)
    restore.add_argument("src", type=Path)

    rekey = sub.add_parser(
        "rekey", help="re-seal personal data under the newest WAYPOST_PII_ENCRYPTION_KEYS key (resumable)"
    )
    _store_args(rekey)
    rekey.add_argument("--batch", type=int, default=500, help="orders per transaction")

    link = sub.add_parser("link", help="print a signed tracking link (as POST /v1/links does)")
    link.add_argument("tracking_number")
    link.add_argument("--days", type=float, default=30)
    link.add_argument("--base", default=None, help="the edge's public URL (default: WAYPOST_PUBLIC_URL)")

    demo = sub.add_parser("demo", help="seed a small world, start origin and edges, print URLs")
    demo.add_argument("--data", type=Path, default=None)
    demo.add_argument("--port", type=int, default=8000)
    demo.add_argument("--shipments", type=int, default=2000)

    args = parser.parse_args(argv)
    if args.command == "seed":
        from origin.seed import seed_world
        from origin.store import open_store

        spec = WorldSpec(
            seed=args.seed, regions=args.regions, products=args.products, shipments=args.shipments
        )
        store = open_store(args.store, args.data, time.time)
        try:
            started = time.perf_counter()
            out = seed_world(store, World(spec, world_now(time.time())), privacy_keys())
            out["seconds"] = round(time.perf_counter() - started, 2)
        finally:
            store.close()
        json.dump(out, sys.stdout, indent=2)
        print()
        return 0
    if args.command == "serve":
        from origin.app import create_app
        from origin.settings import OriginSettings
        from sync import server

        settings = OriginSettings.from_env(
            insecure_dev=args.insecure_dev, data_dir=args.data, store_url=args.store, freeze_heap=True
        )
        if args.insecure_dev:
            print("origin: --insecure-dev: running with throwaway secrets", file=sys.stderr)
        server.run(create_app(settings), host=args.host, port=args.port, log_level=args.log_level)
        return 0
    if args.command in ("compact", "backup", "restore"):
        from origin.store import open_store

        store = open_store(args.store, args.data, time.time)
        try:
            if args.command == "compact":
                marks = store.compact(time.time() - args.keep_days * 86400)
                print(json.dumps({"watermarks": marks}))
            elif args.command == "backup":
                store.backup(args.dest)
                print(json.dumps({"backup": str(args.dest), "epoch": store.epoch()}))
            else:
                epoch = store.restore(args.src)
                print(json.dumps({"restored": str(args.src), "epoch": epoch}))
        finally:
            store.close()
        return 0
    if args.command == "rekey":
        from origin.errors import KeyUnavailable
        from origin.pii import rekey as rekey_store
        from origin.store import open_store

        ring = keyring(os.environ.get("WAYPOST_PII_ENCRYPTION_KEYS"))
        store = open_store(args.store, args.data, time.time)
        try:
            report = rekey_store(store, ring, batch=args.batch)
        except KeyUnavailable as exc:
            raise SystemExit(f"origin rekey: {exc.detail}") from None
        finally:
            store.close()
        print(json.dumps({**report.as_dict(), "key": ring.newest.kid}))
        return 0
    if args.command == "link":
        from origin.links import tracking_link
        from origin.settings import OriginSettings

        secret = os.environ.get("WAYPOST_LINK_SECRET")
        if not secret:
            raise SystemExit("origin link: set WAYPOST_LINK_SECRET (the edges check links with it)")
        settings = OriginSettings(
            data_dir=Path("."),
            link_secret=secret.encode(),
            public_url=os.environ.get("WAYPOST_PUBLIC_URL", "").rstrip("/"),
        )
        print(tracking_link(settings, args.tracking_number, args.days, args.base))
        return 0
    if args.command == "demo":
        from origin.demo import run_demo

        code: int = run_demo(args.data, args.port, args.shipments)
        return code
    return 2


if __name__ == "__main__":
    sys.exit(main())
