"""Fixtures shared by the controller e2e modules."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from e2e.controllers.imageregistry_support import volume_binder
from registry_operator.kube.client import Client


@pytest.fixture
def volumes(api: Client) -> Iterator[Callable[..., str]]:
    """Bind registry claims to hostPath volumes made for them (the cluster has no provisioner)."""
    with volume_binder(api) as bind:
        yield bind
