"""`SharedInformerFactory`: one informer per (resource, namespace, label selector, field selector),
shared by every controller that asks for it, one `ByNameInformer` per resource, the transform each
gets, and start / sync / stop of them all (client-go's `informers.SharedInformerFactory`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass

from registry_operator.kube.byname import ByNameInformer
from registry_operator.kube.cache import IndexFunc
from registry_operator.kube.client import Client
from registry_operator.kube.clock import REAL_CLOCK, Clock
from registry_operator.kube.informer import SharedInformer
from registry_operator.kube.reflector import ClientListerWatcher
from registry_operator.kube.resources import Resource
from registry_operator.kube.transforms import DEFAULT_TRANSFORM, Transform

DEFAULT_RESYNC_PERIOD = 10 * 60 * 60.0


def _selector_string(selector: str | Mapping[str, str] | None) -> str | None:
    """A canonical selector string, so equal selectors share one informer (`a=1,b=2` = `b=2,a=1`)."""
    if selector is None:
        return None
    if isinstance(selector, str):
        if "(" in selector:  # set-based terms hold commas of their own: keep the string as given
            return selector.strip() or None
        return ",".join(sorted(term.strip() for term in selector.split(",") if term.strip())) or None
    return ",".join(f"{k}={v}" for k, v in sorted(selector.items())) or None


@dataclass(frozen=True)
class InformerKey:
    resource: Resource
    namespace: str | None
    label_selector: str | None
    field_selector: str | None


class SharedInformerFactory:
    """One informer per (resource, namespace, label selector, field selector), shared by all users,
    and one `ByNameInformer` per resource.

    Every informer gets the transform for its resource: `transforms[resource]` if given (None there
    means none), else `default_transform` (controller-runtime's cache.Options DefaultTransform and
    ByObject), so all users of a shared informer see the same objects.
    """

    def __init__(
        self,
        client: Client,
        *,
        resync_period: float | None = DEFAULT_RESYNC_PERIOD,
        clock: Clock = REAL_CLOCK,
        page_size: int = 500,
        default_transform: Transform | None = DEFAULT_TRANSFORM,
        transforms: Mapping[Resource, Transform | None] | None = None,
    ) -> None:
        self._client = client
        self._resync_period = resync_period
        self._clock = clock
        self._page_size = page_size
        self._default_transform = default_transform
        self._transforms = dict(transforms or {})
        self._lock = threading.Lock()
        self._informers: dict[InformerKey, SharedInformer] = {}
        self._by_name: dict[Resource, ByNameInformer] = {}
        self._started = False

    def transform_for(self, resource: Resource) -> Transform | None:
        return self._transforms.get(resource, self._default_transform)

    def informer(
        self,
        resource: Resource,
        *,
        namespace: str | None = None,
        label_selector: str | Mapping[str, str] | None = None,
        field_selector: str | Mapping[str, str] | None = None,
        indexers: Mapping[str, IndexFunc] | None = None,
    ) -> SharedInformer:
        key = InformerKey(
            resource,
            (namespace or None) if resource.namespaced else None,
            _selector_string(label_selector),
            _selector_string(field_selector),
        )
        with self._lock:
            informer = self._informers.get(key)
            if informer is None:
                scope = key.namespace or "*"
                selectors = ",".join(s for s in (key.label_selector, key.field_selector) if s)
                informer = SharedInformer(
                    ClientListerWatcher(
                        self._client, resource, key.namespace, key.label_selector, key.field_selector
                    ),
                    name=f"{resource}/{scope}" + (f"[{selectors}]" if selectors else ""),
                    resync_period=self._resync_period,
                    clock=self._clock,
                    page_size=self._page_size,
                    transform=self.transform_for(resource),
                )
                self._informers[key] = informer
                if self._started:
                    informer.start()
        if indexers:
            informer.add_indexers(indexers)
        return informer

    def by_name(
        self, resource: Resource, *, indexers: Mapping[str, IndexFunc] | None = None
    ) -> ByNameInformer:
        """The shared `ByNameInformer` of `resource` (add what it watches with `track_references`)."""
        with self._lock:
            informer = self._by_name.get(resource)
            if informer is None:
                informer = ByNameInformer(
                    self._client,
                    resource,
                    name=f"{resource}/by-name",
                    resync_period=self._resync_period,
                    clock=self._clock,
                    transform=self.transform_for(resource),
                )
                self._by_name[resource] = informer
                if self._started:
                    informer.start()
        if indexers:
            informer.add_indexers(indexers)
        return informer

    def informers(self) -> dict[InformerKey, SharedInformer]:
        with self._lock:
            return dict(self._informers)

    def by_name_informers(self) -> dict[Resource, ByNameInformer]:
        with self._lock:
            return dict(self._by_name)

    def _all(self) -> list[SharedInformer | ByNameInformer]:
        with self._lock:
            return [*self._informers.values(), *self._by_name.values()]

    def start(self) -> None:
        """Start every informer (and those created later)."""
        with self._lock:
            self._started = True
        for informer in self._all():
            informer.start()

    def wait_for_sync(self, timeout: float | None = None) -> bool:
        """Wait (real seconds) until every informer has synced."""
        deadline = None if timeout is None else time.monotonic() + timeout
        for informer in self._all():
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not informer.wait_for_sync(remaining):
                return False
        return True

    def has_synced(self) -> bool:
        return all(informer.has_synced() for informer in self._all())

    def stop(self, timeout: float | None = 5.0) -> None:
        """Stop every informer, waiting at most `timeout` (real seconds) in total."""
        informers = self._all()
        for informer in informers:
            informer.stop(timeout=0)
        deadline = None if timeout is None else time.monotonic() + timeout
        for informer in informers:
            informer.stop(None if deadline is None else max(0.0, deadline - time.monotonic()))
