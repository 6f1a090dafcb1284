"""HTTP service, store and command line around :mod:`engine` (no business logic here)."""
