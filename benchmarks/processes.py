"""The processes a benchmark starts: pinned to a core, watched with psutil, always stopped.

Servers (origin, edges, the bare ceiling app) run on one core and the load generator on
another, so the generator never steals the server's CPU. Every child gets `PR_SET_PDEATHSIG`,
so a runner that dies takes its servers with it; everything listens on 127.0.0.1 only.
"""

from __future__ import annotations

import base64
import ctypes
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
import psutil

from origin.pii import new_key

HOST = "127.0.0.1"
PR_SET_PDEATHSIG = 1


class BenchmarkError(RuntimeError):
    """A scenario could not run (a process died, never got ready, or a tool is missing)."""


@dataclass(frozen=True)
class Cores:
    """Which core the servers get and which the load generator gets."""

    server: int | None
    generator: int | None

    @property
    def pinned(self) -> bool:
        return self.server is not None and self.generator is not None and self.server != self.generator

    @classmethod
    def detect(cls) -> Cores:
        available = sorted(os.sched_getaffinity(0))
        if len(available) < 2:
            return cls(None, None)
        return cls(available[0], available[1])


def _child_setup(core: int | None) -> Callable[[], None]:
    def setup() -> None:
        if core is not None:
            os.sched_setaffinity(0, {core})
        try:
            libc = ctypes.CDLL("libc.so.6", use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        except OSError:
            pass

    return setup


def bench_env(**extra: str) -> dict[str, str]:
    """The environment for servers: throwaway secrets, limits raised for load from one client."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WAYPOST_")}
    env.update(
        {
            "WAYPOST_WEBHOOK_SECRET": "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode(),
            "WAYPOST_EDGE_TOKEN": secrets.token_urlsafe(18),
            "WAYPOST_ADMIN_TOKEN": secrets.token_urlsafe(18),
            "WAYPOST_LINK_SECRET": secrets.token_urlsafe(24),
            "WAYPOST_PII_KEY": secrets.token_urlsafe(24),
            "WAYPOST_PII_ENCRYPTION_KEYS": new_key("bench"),
            "WAYPOST_POSTCODE_KEY": secrets.token_urlsafe(24),
            "WAYPOST_STORE_TOKEN": secrets.token_urlsafe(18),
            # All load comes from one loopback client: per-client limits would measure themselves.
            "WAYPOST_LOOKUP_RATE": "100000000",
            "WAYPOST_UNLOCK_RATE": "100000000",
        }
    )
    env.update(extra)
    return env


def webhook_key(env: dict[str, str]) -> bytes:
    return base64.b64decode(env["WAYPOST_WEBHOOK_SECRET"].removeprefix("whsec_"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


@dataclass
class Service:
    """One child process: its command, its pinned core, its CPU and memory as psutil sees them."""

    role: str
    argv: list[str]
    popen: subprocess.Popen[bytes]
    core: int | None
    log_path: Path
    url: str | None = None
    started_at: float = field(default_factory=time.monotonic)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def cpu_seconds(self) -> float:
        """User + system CPU of the process (and its threads) so far."""
        try:
            t = psutil.Process(self.pid).cpu_times()
        except psutil.Error:
            return float("nan")
        return float(t.user + t.system)

    def rss_bytes(self) -> int:
        return int(psutil.Process(self.pid).memory_info().rss)

    def tail(self, n: int = 20) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-n:])

    def stop(self, timeout: float = 15.0) -> int | None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGINT)
            try:
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout=5)
        return self.popen.returncode

    def describe(self) -> dict[str, Any]:
        return {"role": self.role, "argv": self.argv, "core": self.core, "url": self.url}


class Processes(AbstractContextManager["Processes"]):
    """Starts children and stops every one of them on exit, whatever happened."""

    def __init__(self, workdir: Path, cores: Cores) -> None:
        self.workdir = workdir
        self.cores = cores
        self.services: list[Service] = []

    def start(
        self, role: str, argv: Sequence[str], *, env: dict[str, str], generator: bool = False
    ) -> Service:
        core = self.cores.generator if generator else self.cores.server
        log_path = self.workdir / f"{role}.log"
        log = log_path.open("ab")
        try:
            popen = subprocess.Popen(
                list(argv),
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                preexec_fn=_child_setup(core),
            )
        finally:
            log.close()
        service = Service(role, list(argv), popen, core, log_path)
        self.services.append(service)
        return service

    def stop(self, service: Service) -> None:
        service.stop()
        if service in self.services:
            self.services.remove(service)

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        for service in reversed(self.services):
            service.stop()
        self.services.clear()

    def check_alive(self) -> None:
        for s in self.services:
            if not s.alive():
                raise BenchmarkError(f"{s.role} exited early with code {s.popen.returncode}:\n{s.tail()}")


def wait_ready(procs: Processes, url: str, timeout: float) -> float:
    """Poll `url` until it answers 200; return the monotonic time it did."""
    deadline = time.monotonic() + timeout
    with httpx.Client(timeout=2.0) as http:
        while time.monotonic() < deadline:
            procs.check_alive()
            try:
                if http.get(url).status_code == 200:
                    return time.monotonic()
            except httpx.HTTPError:
                pass
            time.sleep(0.02)
    raise BenchmarkError(f"{url} was not ready after {timeout:.0f}s")


def python_m(*args: str) -> list[str]:
    return [sys.executable, "-m", *args]


def start_origin(
    procs: Processes,
    data: Path,
    env: dict[str, str],
    store: str | None,
    index: int = 0,
    *,
    generator_core: bool = False,
) -> Service:
    port = free_port()
    argv = python_m("origin", "serve", "--data", str(data), "--host", HOST, "--port", str(port))
    argv += ["--log-level", "warning", *(["--store", store] if store else [])]
    service = procs.start(f"origin-{index}", argv, env=env, generator=generator_core)
    service.url = f"http://{HOST}:{port}"
    wait_ready(procs, f"{service.url}/healthz", timeout=60)
    return service


def start_edge(
    procs: Processes,
    origin_url: str,
    region: str,
    data: Path,
    env: dict[str, str],
    *,
    ready_timeout: float = 120.0,
    wait: bool = True,
) -> Service:
    port = free_port()
    argv = python_m("edge", "serve", "--origin", origin_url, "--region", region, "--data", str(data))
    argv += ["--host", HOST, "--port", str(port), "--log-level", "warning"]
    service = procs.start(f"edge-{region}", argv, env=env)
    service.url = f"http://{HOST}:{port}"
    if wait:
        wait_ready(procs, f"{service.url}/readyz", timeout=ready_timeout)
    return service


def start_bare(procs: Processes, env: dict[str, str]) -> Service:
    """The ceiling: a bare Starlette endpoint served exactly as the services are."""
    port = free_port()
    argv = python_m("benchmarks", "serve-bare", "--host", HOST, "--port", str(port))
    service = procs.start("bare-starlette", argv, env=env)
    service.url = f"http://{HOST}:{port}"
    wait_ready(procs, f"{service.url}/healthz", timeout=30)
    return service


@dataclass(frozen=True)
class Finished:
    stdout: str
    wall_s: float
    cpu_s: float
    max_rss_bytes: int


def run_to_end(argv: Sequence[str], *, env: dict[str, str], core: int | None, timeout: float) -> Finished:
    """Run a child to completion on `core`; its own CPU time and peak RSS come from wait4."""
    started = time.monotonic()
    proc = subprocess.Popen(
        list(argv),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        preexec_fn=_child_setup(core),
    )
    out: list[bytes] = []
    err: list[bytes] = []
    readers = [
        threading.Thread(target=lambda: out.append(proc.stdout.read() if proc.stdout else b"")),
        threading.Thread(target=lambda: err.append(proc.stderr.read() if proc.stderr else b"")),
    ]
    for r in readers:
        r.start()
    timer = threading.Timer(timeout, proc.kill)
    timer.start()
    try:
        _, status, usage = os.wait4(proc.pid, 0)
    finally:
        timer.cancel()
    proc.returncode = os.waitstatus_to_exitcode(status)
    for r in readers:
        r.join()
    wall = time.monotonic() - started
    if proc.returncode != 0:
        tail = b"".join(err).decode(errors="replace")[-2000:]
        raise BenchmarkError(f"{argv[2:4]} exited with code {proc.returncode} after {wall:.1f}s:\n{tail}")
    return Finished(
        stdout=b"".join(out).decode(),
        wall_s=wall,
        cpu_s=usage.ru_utime + usage.ru_stime,
        max_rss_bytes=usage.ru_maxrss * 1024,
    )


def seed(
    data: Path,
    *,
    shipments: int,
    regions: int,
    env: dict[str, str],
    store: str | None,
    seed_value: int = 7,
) -> tuple[dict[str, Any], Finished]:
    """`python -m origin seed`; its JSON summary and how long it took.

    Not pinned: seeding is a batch job that may fork helpers, and nothing is measured beside it.
    """
    argv = python_m("origin", "seed", "--data", str(data), "--shipments", str(shipments))
    argv += ["--regions", str(regions), "--seed", str(seed_value), *(["--store", store] if store else [])]
    done = run_to_end(argv, env=env, core=None, timeout=1800)
    summary: dict[str, Any] = json.loads(done.stdout)
    return summary, done
