"""`python -m origin demo`: a small world, the origin and one edge per region, on loopback.

Everything runs as real processes (`python -m origin serve`, `python -m edge serve`) with
throwaway secrets; Ctrl-C stops them all.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from models.world import World, WorldSpec, world_now
from origin.links import tracking_link
from origin.orders import PrivacyKeys
from origin.pii import Keyring
from origin.seed import seed_world
from origin.settings import OriginSettings, dev_secrets
from origin.store import open_store


def free_port(preferred: int = 0) -> int:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", preferred))
        except OSError:
            s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ready(url: str, procs: list[subprocess.Popen[bytes]], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for p in procs:
            if p.poll() is not None:
                raise SystemExit(f"demo: a process exited early ({p.args!r}, code {p.returncode})")
        try:
            if httpx.get(url, timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"demo: {url} not ready after {timeout:.0f}s")


def _stop_on(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def run_demo(data: Path | None, port: int, shipments: int) -> int:
    # Ctrl-C or a TERM stops everything it started, also when it was started in the
    # background (where a shell leaves SIGINT ignored, and Python would not raise on it).
    signal.signal(signal.SIGINT, _stop_on)
    signal.signal(signal.SIGTERM, _stop_on)
    root = data or Path(tempfile.mkdtemp(prefix="waypost-demo-"))
    env = {**os.environ, **dev_secrets(), "WAYPOST_STORE_TOKEN": "demo-store-token"}
    world = World(WorldSpec(shipments=shipments), world_now(time.time()))
    store = open_store(None, root / "origin", time.time)
    try:
        keys = PrivacyKeys(
            env["WAYPOST_PII_KEY"].encode(),
            env["WAYPOST_POSTCODE_KEY"].encode(),
            Keyring.parse(env["WAYPOST_PII_ENCRYPTION_KEYS"]),
        )
        summary = seed_world(store, world, keys)
    finally:
        store.close()

    origin_port = free_port(port)
    origin_url = f"http://127.0.0.1:{origin_port}"
    py = sys.executable
    procs = [
        subprocess.Popen(
            [
                py,
                "-m",
                "origin",
                "serve",
                "--data",
                str(root / "origin"),
                "--port",
                str(origin_port),
                "--log-level",
                "warning",
            ],
            env=env,
        )
    ]
    edges: dict[str, str] = {}
    try:
        wait_ready(f"{origin_url}/healthz", procs)
        for region in summary["regions"]:
            edge_port = free_port(origin_port + 100 + len(edges))
            procs.append(
                subprocess.Popen(
                    [
                        py,
                        "-m",
                        "edge",
                        "serve",
                        "--origin",
                        origin_url,
                        "--region",
                        region,
                        "--data",
                        str(root / f"edge-{region}"),
                        "--port",
                        str(edge_port),
                        "--log-level",
                        "warning",
                    ],
                    env=env,
                )
            )
            edges[region] = f"http://127.0.0.1:{edge_port}"
        for url in edges.values():
            wait_ready(f"{url}/readyz", procs)
        print_urls(origin_url, edges, summary, env, root)
        while all(p.poll() is None for p in procs):
            time.sleep(0.5)
        return 1
    except KeyboardInterrupt:
        print("\ndemo: stopping", flush=True)
        return 0
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()


def print_urls(
    origin_url: str, edges: dict[str, str], summary: dict[str, object], env: dict[str, str], root: Path
) -> None:
    samples: dict[str, list[str]] = summary["samples"]  # type: ignore[assignment]
    link_settings = OriginSettings(data_dir=root, link_secret=env["WAYPOST_LINK_SECRET"].encode())
    lines = ["", "waypost demo is running (Ctrl-C stops everything)", f"  data: {root}", ""]
    routable: dict[str, tuple[str, float, float]] = {}  # region → a sku in stock there, its centre
    store = open_store(None, root / "origin", time.time)
    try:
        with store.reader() as r:
            for sku, region, lat, lon, _ in r.execute(
                "SELECT s.sku, g.name, g.lat, g.lon, max(s.on_hand - s.reserved) FROM stock_level s"
                " JOIN site_region sr ON sr.site_id = s.site_id JOIN region g ON g.name = sr.region"
                " GROUP BY s.sku, g.name ORDER BY max(s.on_hand - s.reserved) DESC, s.sku"
            ).fetchall():
                routable.setdefault(region, (sku, lat, lon))
    finally:
        store.close()
    for region, url in edges.items():
        lines.append(f"  edge {region}: {url}")
        for tn in samples[region][:3]:
            lines.append(f"    tracking page  {url}/track/{tn}")
        signed = tracking_link(link_settings, samples[region][0], 30, base=url)
        lines.append(f"    signed link    {signed}   (opens the order details: items, city, suggestions)")
        lines.append(f"    JSON           {url}/v1/track/{samples[region][0]}")
        lines.append(f"    sync status    {url}/v1/sync/status")
        row = routable.get(region)
        if row is not None:
            order = {
                "order_id": f"demo-{region}-1",
                "destination": {"lat": round(row[1] + 0.02, 4), "lon": round(row[2] - 0.03, 4)},
                "lines": [{"sku": row[0], "qty": 2}],
            }
            lines.append(
                f"    route          curl -X POST {url}/v1/route"
                f" -H 'Authorization: Bearer {env['WAYPOST_STORE_TOKEN']}'"
                f" -H 'Content-Type: application/json' -d '{json.dumps(order)}'"
            )
    token = env["WAYPOST_EDGE_TOKEN"]
    lines += [
        "",
        f"  origin: {origin_url}",
        f"    buckets        curl -H 'Authorization: Bearer {token}' {origin_url}/v1/buckets",
        f"    metrics        {origin_url}/metrics",
        "",
        "  throwaway secrets for this run:",
        *(f"    {k}={env[k]}" for k in sorted(env) if k.startswith("WAYPOST_")),
        "",
    ]
    print("\n".join(lines), flush=True)
    print("DEMO-READY " + json.dumps({"origin": origin_url, "edges": edges, "samples": samples}), flush=True)
