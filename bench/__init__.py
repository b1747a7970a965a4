"""Benchmarks: `python -m bench` runs every `bench/bench_*.py` and writes BENCHMARKS.md.

Each module defines `run() -> str`, returning a Markdown section that puts edgetrust beside
the baseline its issue names, measured in the same run.
"""
