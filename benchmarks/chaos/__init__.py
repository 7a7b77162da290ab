"""`python -m benchmarks chaos`: kills under load, then checks (see `benchmarks.chaos.run`)."""

from benchmarks.chaos.run import ChaosOptions, run_chaos

__all__ = ["ChaosOptions", "run_chaos"]
