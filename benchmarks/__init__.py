"""Benchmarks: this project against weave 0.53.6 on the same seeded traces, in one run."""
