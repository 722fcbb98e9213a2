"""Benchmarks behind tools/benchmark.py, one module per subject."""
