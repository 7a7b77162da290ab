"""`python -m benchmarks fuzz`: hostile requests to every endpoint (see `benchmarks.fuzz.run`)."""

from benchmarks.fuzz.run import FuzzOptions, run_fuzz

__all__ = ["FuzzOptions", "run_fuzz"]
