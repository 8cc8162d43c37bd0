"""Benchmarks: costs measured as ratios against a baseline run in the same process (see docs/benchmarks.md)."""
