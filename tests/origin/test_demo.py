"""`python -m origin demo` (what `make demo` runs) starts everything and its URLs work."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx


def test_demo_starts_origin_and_edges_and_its_urls_work(tmp_path: Path) -> None:
    with subprocess.Popen(
        [
            sys.executable,
            "-m",
            "origin",
            "demo",
            "--data",
            str(tmp_path),
            "--port",
            "0",
            "--shipments",
            "300",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        # As a shell starts a job in the background: Ctrl-C must still stop it (via its handler).
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
        start_new_session=True,
    ) as proc:
        assert proc.stdout is not None
        try:
            ready = None
            output = []
            for line in proc.stdout:
                output.append(line)
                if line.startswith("DEMO-READY "):
                    ready = json.loads(line.removeprefix("DEMO-READY "))
                    break
            assert ready is not None, "".join(output)
            text = "".join(output)
            assert "tracking page" in text and "signed link" in text
            signed = next(line.split()[2] for line in output if "signed link" in line)
            unlocked = httpx.get(signed, timeout=10)
            assert unlocked.status_code == 200 and "Your order" in unlocked.text
            for region, url in ready["edges"].items():
                tn = ready["samples"][region][0]
                page = httpx.get(f"{url}/track/{tn}", timeout=10)
                assert page.status_code == 200 and tn in page.text
        finally:
            proc.send_signal(signal.SIGINT)
            try:
                proc.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)  # the demo and what it started
                proc.wait()
                raise
    assert proc.returncode == 0
