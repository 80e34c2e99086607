"""ImageRegistry controller: runs a registry + docker_auth + authn sidecar StatefulSet per ImageRegistry.

Reconcile (the objects themselves are built by the pure functions in imageregistry_desired.py):
1. read the registry from the cache; gone or being deleted → done (children carry controller owner
   references and are garbage-collected; the PVC only when `deleteClaim: true`);
2. TLS material, by `spec.tls`: neither field → a serving certificate signed by the root CA
   (`imageregistry-<name>-selfsigned-tls`, re-issued when missing, invalid, due for renewal, for other
   DNS names, or signed by another CA than the current root CA); `secretName` → the user's Secret,
   used as-is; `issuerRef` → a cert-manager Certificate, then the Secret cert-manager writes;
3. the RSA token key pair (docker_auth signs, the registry verifies) and the shared
   REGISTRY_HTTP_SECRET, generated once and kept;
4. the ConfigMap with the registry config and the docker_auth config (default ACL or
   `spec.auth.acl`); ServiceAccount, Role, RoleBinding; Service; PVC;
5. the StatefulSet, with a pod-template hash over every mounted config and certificate;
6. status: `hostname`, `tlsSecretName`, `observedGeneration`, `Synced` and `Ready` (from the rollout);
7. requeue at the earliest renewal time of the certificates the operator issued.

Every child is written by server-side apply, and only when the cached object lacks a desired field,
so a steady state costs no writes. A user problem (unusable TLS Secret, invalid ACL, a foreign
Secret in the way) sets Ready=False and Synced=False with a message naming what to fix, and leaves the
StatefulSet as it was — running pods keep serving with the last good material. API errors that
retrying cannot fix (Invalid, Forbidden, a missing cert-manager) are reported the same way and
re-checked every few minutes; transient ones are retried with backoff. Messages never hold secret
data.

Caches (all scoped to WATCH_NAMESPACE, "" = all namespaces):
* children: informers with the label selector `app.kubernetes.io/managed-by=image-registry-operator`
  (every child carries it), so the operator does not cache every StatefulSet, ConfigMap, ... in scope;
* user TLS Secrets (`spec.tls.secretName`, and the Secret cert-manager writes): the *unscoped* Secret
  informer. Users' Secrets carry no label of ours, so a label selector cannot find them; the
  ImageBuildEnv controller keeps exactly this informer for its input Secrets anyway, so sharing it
  adds no memory in the full operator, gives an event for a Secret of any type (no polling) and keeps
  reads on the cache. They are mapped back to registries through an index on `spec.tls`;
* the root CA: the caroot controller's single-Secret informer, mapped to every registry using it;
* cert-manager Certificates are not cached: their CRD may be absent, and an informer on a missing
  resource would block the manager's cache sync. They are read with a GET, only for registries with
  an `issuerRef`; what matters for the pods is the Secret, which is watched.

Modules, one concern each (they talk through API objects and plain values):
* `context`: who the registry is (`RegistryContext`), names, paths and labels all parts share;
* `tls`: serving TLS from the root CA, the user's Secret or cert-manager;
* `keys`: the token key pair, the HTTP secret, and the rule for every generated Secret;
* `config`: the rendered registry and docker_auth configuration (ConfigMap);
* `workload`: StatefulSet, Service, RBAC for the authn sidecar, PVC;
* `readiness`: the rollout as the Ready condition sees it, status and Events;
* `rollout`: the PodDisruptionBudget and the bound on rollouts the operator starts by itself;
* `base`: the caches, child writes and Events every part uses;
* `reconciler`: the order of it all and the requeue;
* `watches`: the caches, the registry indexes and the watches (`setup`).
"""

from registry_operator.controllers.imageregistry.base import PERSISTENT_ERROR_RECHECK, RegistryStores
from registry_operator.controllers.imageregistry.reconciler import ImageRegistryReconciler
from registry_operator.controllers.imageregistry.watches import index_tls_secret, index_uses_root_ca, setup

__all__ = [
    "PERSISTENT_ERROR_RECHECK",
    "ImageRegistryReconciler",
    "RegistryStores",
    "index_tls_secret",
    "index_uses_root_ca",
    "setup",
]
