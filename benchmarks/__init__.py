"""Benchmarks: measured as ratios in one process run, never as unit tests."""
