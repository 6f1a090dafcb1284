"""Benchmarks: this project against weave 0.53.12 on the same seeded traces, in one run."""
