"""Fixtures of the fault suite (issue 17): a toxiproxy-server per test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from e2e.faults.toxiproxy import Toxiproxy


@pytest.fixture
def toxiproxy(tmp_path: Path) -> Iterator[Toxiproxy]:
    proxy = Toxiproxy(tmp_path)
    yield proxy
    proxy.stop()
