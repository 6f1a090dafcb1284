"""Fixtures shared by the test files: a real store on a fresh temporary DuckDB file."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from service.settings import DB_FILE
from service.store import CallStore

# litellm (imported by the reference server) must not try the network for its price map
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")


@pytest.fixture
def store(tmp_path: Path) -> Iterator[CallStore]:
    """A :class:`CallStore` on an empty file, closed after the test (files that test the
    HTTP layer over a fake store override it)."""
    st = CallStore(tmp_path / DB_FILE)
    yield st
    st.close()
