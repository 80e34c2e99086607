"""The docker_auth lane: `make e2e-docker-auth DOCKER_AUTH_BIN=/path/to/auth_server` (marker docker_auth)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from e2e.controllers.conftest import volumes  # noqa: F401  (fixture)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.docker_auth)


@pytest.fixture(scope="session")
def docker_auth_bin() -> Path:
    value = os.environ.get("DOCKER_AUTH_BIN", "")
    # Never a skip: the lane is only selected on purpose (make e2e-docker-auth).
    assert value, "the docker_auth lane needs DOCKER_AUTH_BIN=/path/to/auth_server (docker_auth 1.14)"
    path = Path(value)
    assert path.is_file() and os.access(path, os.X_OK), f"DOCKER_AUTH_BIN={value} is not an executable"
    return path
