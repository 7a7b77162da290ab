"""`python -m benchmarks.proxy_cache`: a fleet of edges catching up through nginx's proxy_cache.

Seeds a one-region world, serves it with `python -m origin serve`, and lets K simulated edges
catch up on the region bucket from the same cursor three ways: straight from the origin, through
nginx running `benchmarks/nginx/origin-cache.conf` with an empty cache, and the same with
`proxy_cache_lock off` (to show what the lock saves). A simulated edge is
`sync.client.FeedClient` (the edge's own client) driven by `edge/follower.py`'s rule while
behind: aligned pages (`after` = cursor - cursor % limit, no `wait`) until a page reaches the
head. So its URLs are exactly a real edge's; it only skips applying the pages to SQLite.

Printed per K: requests the origin served, bytes of body it sent (nginx: `$upstream_cache_status`
and `$upstream_response_length` from its access log; direct: the Content-Length the edges received), the
cache hit ratio and the fleet's catch-up time (the slowest edge), and the with/without ratios.
Everything listens on 127.0.0.1; origin and nginx share one core, the edges get another; nginx
and the origin are stopped at the end, whatever happened.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import httpx

from edge.settings import EdgeSettings
from origin.settings import dev_secrets
from sync.client import FeedClient

CONFIG = Path(__file__).parent / "nginx" / "origin-cache.conf"
HOST = "127.0.0.1"
FEED_LIMIT = EdgeSettings.feed_limit  # what an edge asks for
PR_SET_PDEATHSIG = 1


def find_nginx() -> str | None:
    return shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if os.access(p, os.X_OK)), None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def _pinned(core: int | None) -> None:
    if core is not None:
        os.sched_setaffinity(0, {core})
    with contextlib.suppress(OSError):  # die with the benchmark
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


@contextmanager
def child(
    argv: Sequence[str], *, log: Path, env: dict[str, str], core: int | None
) -> Iterator[subprocess.Popen[bytes]]:
    """A server process for the duration of the block; SIGINT (then SIGKILL) on the way out."""
    with log.open("ab") as out:
        proc = subprocess.Popen(
            list(argv), stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
            preexec_fn=lambda: _pinned(core),
        )  # fmt: skip
    try:
        yield proc
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def wait_ok(url: str, proc: subprocess.Popen[bytes], logs: Sequence[Path], timeout: float = 60.0) -> None:
    """Poll `url` until it answers 200; fail with the logs' tails if `proc` exits or time runs out."""
    deadline = time.monotonic() + timeout
    with httpx.Client(timeout=2.0) as http:
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                if http.get(url).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
    tails = "\n".join(p.read_text(errors="replace")[-2000:] for p in logs if p.exists())
    raise RuntimeError(f"{url} did not answer 200 ({proc.args!r} exit code {proc.poll()}):\n{tails}")


@dataclass(frozen=True)
class LogLine:
    """One line of the `feed` log_format: what nginx answered and what the origin sent for it."""

    uri: str
    status: int
    cache: str  # $upstream_cache_status: MISS, HIT, BYPASS, EXPIRED, … or "-" (no cache involved)
    upstream_status: str
    upstream_bytes: int

    @property
    def from_origin(self) -> bool:
        return self.upstream_status != "-"

    @classmethod
    def parse(cls, line: str) -> LogLine:
        uri, status, _sent, cache, upstream_status, upstream_len, _time = line.split(" ", 6)
        sent = sum(int(x) for x in upstream_len.replace(",", " ").split() if x.isdigit())
        return cls(uri, int(status), cache, upstream_status, sent)


class Nginx:
    """nginx with `origin-cache.conf`, in the foreground, its prefix (cache, logs) under `prefix`."""

    def __init__(
        self, origin: str, *, env: dict[str, str], core: int | None = None, lock: bool = True
    ) -> None:
        binary = find_nginx()
        assert binary, "nginx is not installed (apt-get install nginx-light)"
        self.binary = binary
        self.prefix = Path()
        self.port = free_port()
        self.url = f"http://{HOST}:{self.port}"
        self.env = env
        self.core = core
        upstream = origin.removeprefix("http://")
        self.config = CONFIG.read_text().replace("@ORIGIN@", upstream).replace("@LISTEN@", str(self.port))
        if not lock:  # only to measure what the lock saves
            assert "proxy_cache_lock on;" in self.config, "origin-cache.conf no longer turns the lock on"
            self.config = self.config.replace("proxy_cache_lock on;", "proxy_cache_lock off;")

    @contextmanager
    def running(self) -> Iterator[Nginx]:
        """Serve with an empty cache for the block; the prefix (cache, logs) is removed after."""
        # Directly under /tmp and 0755: started as root, nginx's workers run as `nobody` and
        # must reach the cache (a pytest tmp_path, under a 0700 directory, would not do).
        self.prefix = Path(tempfile.mkdtemp(prefix="waypost-nginx-"))
        try:
            self.prefix.chmod(0o755)
            (self.prefix / "tmp").mkdir()
            conf = self.prefix / "nginx.conf"
            conf.write_text(self.config)
            argv = [self.binary, "-p", str(self.prefix), "-c", str(conf)]
            out = self.prefix / "stdout.log"
            with child(argv, log=out, env=self.env, core=self.core) as proc:
                wait_ok(f"{self.url}/healthz", proc, [out, self.prefix / "error.log"], timeout=15)
                yield self
        finally:
            shutil.rmtree(self.prefix, ignore_errors=True)

    def feed_log(self) -> list[LogLine]:
        lines = (self.prefix / "access.log").read_text().splitlines()
        return [LogLine.parse(x) for x in lines if x.startswith("/v1/feed/")]


@dataclass
class EdgeRun:
    requests: int = 0
    body_bytes: int = 0
    cache: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0


async def catch_up(base_url: str, token: str, bucket: str, epoch: str, cursor: int, limit: int) -> EdgeRun:
    """One edge, behind at `cursor`, reads aligned pages as `BucketFollower.step` does."""
    run = EdgeRun()

    async def count(session: object, ctx: object, params: aiohttp.TraceRequestEndParams) -> None:
        run.requests += 1
        run.body_bytes += int(params.response.headers.get("content-length", 0))
        run.cache[params.response.headers.get("x-cache-status", "-")] += 1

    trace = aiohttp.TraceConfig()
    trace.on_request_end.append(count)
    started = time.monotonic()
    async with FeedClient(base_url, token, trace_configs=[trace]) as feed:
        while True:
            page = await feed.page(bucket, epoch=epoch, after=cursor - cursor % limit, limit=limit)
            cursor = max(cursor, page.last)
            if page.head is not None and page.last >= page.head:
                break
    run.seconds = time.monotonic() - started
    return run


@dataclass(frozen=True)
class Fleet:
    """K edges of one region, all behind at `cursor` in `bucket`, starting together."""

    token: str
    bucket: str
    epoch: str
    cursor: int
    limit: int = FEED_LIMIT

    async def catch_up(self, base_url: str, k: int) -> list[EdgeRun]:
        edges = (
            catch_up(base_url, self.token, self.bucket, self.epoch, self.cursor, self.limit) for _ in range(k)
        )
        return list(await asyncio.gather(*edges))


@dataclass
class Figures:
    edges: int
    mode: str
    edge_requests: int
    origin_requests: int
    origin_bytes: int
    seconds: float
    cache: dict[str, int] = field(default_factory=dict)  # nginx's $upstream_cache_status counts

    @property
    def hit_ratio(self) -> float:
        return self.cache.get("HIT", 0) / self.edge_requests if self.edge_requests else 0.0


def direct(origin: str, fleet: Fleet, k: int) -> Figures:
    runs = asyncio.run(fleet.catch_up(origin, k))
    requests = sum(r.requests for r in runs)
    size = sum(r.body_bytes for r in runs)
    return Figures(k, "direct", requests, requests, size, max(r.seconds for r in runs))


def through_nginx(proxy: Nginx, fleet: Fleet, k: int, mode: str = "nginx") -> Figures:
    """The fleet through `proxy`, started with an empty cache; origin figures from its access log."""
    with proxy.running():
        runs = asyncio.run(fleet.catch_up(proxy.url, k))
        log = proxy.feed_log()
    upstream = [x for x in log if x.from_origin]
    return Figures(
        edges=k,
        mode=mode,
        edge_requests=sum(r.requests for r in runs),
        origin_requests=len(upstream),
        origin_bytes=sum(x.upstream_bytes for x in upstream),
        seconds=max(r.seconds for r in runs),
        cache=dict(Counter(x.cache for x in log)),
    )


def server_env() -> dict[str, str]:
    """Throwaway secrets for the origin (never a caller's WAYPOST_* settings)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WAYPOST_")}
    return {**env, **dev_secrets(), "WAYPOST_STORE_TOKEN": "bench-store-token"}


def region_fleet(origin: str, token: str, behind: int | None) -> tuple[Fleet, int]:
    """Edges `behind` changes behind the region bucket's head (default: from the watermark)."""
    rows = httpx.get(f"{origin}/v1/buckets", headers={"Authorization": f"Bearer {token}"}).json()
    row = next(r for r in rows if r["bucket"].startswith("region:"))
    head, watermark = int(row["head"]), int(row["watermark"])
    cursor = watermark if behind is None else max(head - behind, watermark)
    return Fleet(token, row["bucket"], row["epoch"], cursor), head


def measure(
    origin: str, fleet: Fleet, sizes: Sequence[int], repeat: int, *, env: dict[str, str], core: int | None
) -> list[list[Figures]]:
    """Per fleet size: direct, through nginx, through nginx without the cache lock."""
    direct(origin, fleet, 1)  # warm the origin's page cache before anything is timed
    table = []
    for k in sizes:
        runs = []
        for _ in range(repeat):
            runs.append(
                [
                    direct(origin, fleet, k),
                    through_nginx(Nginx(origin, env=env, core=core), fleet, k),
                    through_nginx(Nginx(origin, env=env, core=core, lock=False), fleet, k, "no lock"),
                ]
            )
        for i, first in enumerate(runs[0]):  # the first run's counts, the median time
            first.seconds = statistics.median(run[i].seconds for run in runs)
        table.append(runs[0])
    return table


def report(table: list[list[Figures]]) -> str:
    out = [
        f"{'edges':>5} {'mode':>8} {'edge req':>9} {'origin req':>10} {'origin MB':>10} "
        f"{'hit ratio':>9} {'catch-up s':>10}  nginx cache status"
    ]
    for row in table:
        for f in row:
            statuses = " ".join(f"{k} {v}" for k, v in sorted(f.cache.items()))
            out.append(
                f"{f.edges:>5} {f.mode:>8} {f.edge_requests:>9} {f.origin_requests:>10} "
                f"{f.origin_bytes / 1e6:>10.1f} {f.hit_ratio:>9.1%} {f.seconds:>10.2f}  {statuses}"
            )
    out += ["", "through nginx / direct, same run:"]
    for d, *proxied in table:
        for n in proxied:
            requests, size = n.origin_requests / d.origin_requests, n.origin_bytes / d.origin_bytes
            out.append(
                f"  {d.edges} edge(s), {n.mode}: origin requests x{requests:.3f}, origin bytes x{size:.3f},"
                f" catch-up time x{n.seconds / d.seconds:.2f}"
            )
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.proxy_cache", description=__doc__)
    parser.add_argument("--shipments", type=int, default=50_000, help="world size (one region)")
    parser.add_argument("--edges", default="1,4,8", help="fleet sizes, e.g. 1,4,8")
    parser.add_argument("--behind", type=int, help="changes the edges are behind (default: the whole log)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per size (median time)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    nginx = find_nginx()
    if nginx is None:
        print("proxy_cache: nginx is not installed (apt-get install nginx-light)", file=sys.stderr)
        return 2
    sizes = [int(x) for x in args.edges.split(",") if x]
    cores = sorted(os.sched_getaffinity(0))
    server_core, edge_core = (cores[0], cores[1]) if len(cores) > 1 else (None, None)
    env = server_env()
    with tempfile.TemporaryDirectory(prefix="waypost-proxy-cache-") as tmp:
        data, log = Path(tmp) / "origin", Path(tmp) / "origin.log"
        seed = [sys.executable, "-m", "origin", "seed", "--data", str(data)]
        seed += ["--shipments", str(args.shipments), "--regions", "1"]
        quiet = subprocess.DEVNULL
        subprocess.run(seed, env=env, check=True, stdout=quiet, preexec_fn=lambda: _pinned(server_core))
        port = free_port()
        origin = f"http://{HOST}:{port}"
        serve = [sys.executable, "-m", "origin", "serve", "--data", str(data)]
        serve += ["--host", HOST, "--port", str(port), "--log-level", "warning"]
        with child(serve, log=log, env=env, core=server_core) as proc:
            wait_ok(f"{origin}/healthz", proc, [log])
            if edge_core is not None:
                os.sched_setaffinity(0, {edge_core})
            fleet, head = region_fleet(origin, env["WAYPOST_EDGE_TOKEN"], args.behind)
            pages = -(-(head - fleet.cursor) // fleet.limit)
            print(
                f"{fleet.bucket}: head {head}, edges start at {fleet.cursor} ({pages} pages of"
                f" {fleet.limit}); {nginx}; origin and nginx on core {server_core}, edges on {edge_core}",
                flush=True,
            )
            table = measure(origin, fleet, sizes, args.repeat, env=env, core=server_core)
    print(report(table))
    if args.json:
        args.json.write_text(json.dumps([[vars(f) for f in row] for row in table], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
