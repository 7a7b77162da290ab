"""An origin and an edge that can be SIGKILLed and started again on the same port and data.

`processes.start_origin` / `start_edge` pick a new port each time; a service that is killed and
restarted must come back where its clients (and the edge's feed client) look for it, on the
data it left behind. Each start is timed to readiness, so the run can say what a kill costs.
"""

from __future__ import annotations

import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from benchmarks.processes import HOST, BenchmarkError, _child_setup, free_port, python_m


@dataclass
class Restartable:
    """One service process; `kill()` is SIGKILL, `start()` brings it back on the same port."""

    role: str
    argv: list[str]
    env: dict[str, str]
    port: int
    ready_path: str
    log_path: Path
    ready_timeout_s: float = 60.0
    popen: subprocess.Popen[bytes] | None = None
    starts_s: list[float] = field(default_factory=list)  # seconds from spawn to ready, per start
    kills: int = 0

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def start(self) -> float:
        """Spawn and wait until `ready_path` answers 200; the seconds it took."""
        assert not self.alive(), f"{self.role} is already running"
        started = time.monotonic()
        with self.log_path.open("ab") as log:
            self.popen = subprocess.Popen(
                self.argv,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                preexec_fn=_child_setup(None),
            )
        self.wait_ready(self.ready_timeout_s)
        took = time.monotonic() - started
        self.starts_s.append(took)
        return took

    def wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        with httpx.Client(timeout=2.0) as http:
            while time.monotonic() < deadline:
                if not self.alive():
                    code = self.popen.returncode if self.popen else None
                    raise BenchmarkError(f"{self.role} exited with code {code}:\n{self.tail()}")
                try:
                    if http.get(self.url + self.ready_path).status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                time.sleep(0.01)
        raise BenchmarkError(f"{self.role} was not ready at {self.ready_path} after {timeout_s:.0f}s")

    def kill(self) -> None:
        """SIGKILL: no lifespan shutdown, no flush; what was committed is all that survives."""
        assert self.popen is not None and self.alive(), f"{self.role} is not running"
        self.popen.send_signal(signal.SIGKILL)
        self.popen.wait(timeout=10)
        self.kills += 1

    def stop(self) -> None:
        if self.popen is None or self.popen.poll() is not None:
            return
        self.popen.send_signal(signal.SIGINT)
        try:
            self.popen.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(timeout=5)

    def tail(self, n: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


def origin_service(workdir: Path, data: Path, env: dict[str, str], store: str | None) -> Restartable:
    port = free_port()
    argv = python_m("origin", "serve", "--data", str(data), "--host", HOST, "--port", str(port))
    argv += ["--log-level", "warning", *(["--store", store] if store else [])]
    return Restartable("origin", argv, env, port, "/healthz", workdir / "origin.log")


def edge_service(workdir: Path, origin_url: str, region: str, data: Path, env: dict[str, str]) -> Restartable:
    port = free_port()
    argv = python_m("edge", "serve", "--origin", origin_url, "--region", region, "--data", str(data))
    argv += ["--host", HOST, "--port", str(port), "--log-level", "warning"]
    return Restartable(f"edge-{region}", argv, env, port, "/readyz", workdir / f"edge-{region}.log", 120.0)
