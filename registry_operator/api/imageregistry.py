"""`ImageRegistry`: a container image registry with docker_auth token authentication."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Final, Literal

from pydantic import ConfigDict, Field, model_validator

from registry_operator.api.base import ApiModel, Resource, Time, is_empty
from registry_operator.api.common import DNS1123Label, DNS1123Subdomain, Quantity, StatusBase
from registry_operator.api.constants import API_VERSION, KIND_IMAGE_REGISTRY, PLURAL_IMAGE_REGISTRIES

CERT_MANAGER_GROUP: Final = "cert-manager.io"

AccessModeName = Literal["ReadWriteOnce", "ReadWriteOncePod", "ReadWriteMany"]
ServiceType = Literal["ClusterIP", "NodePort", "LoadBalancer"]
AclAction = Literal["pull", "push", "delete", "*"]

StorageType = Literal["PersistentVolumeClaim", "S3"]
GarbageCollectionPhase = Literal["Idle", "ReadOnly", "Collecting"]
GarbageCollectionResult = Literal["Succeeded", "Failed"]

ACCESS_MODE_READ_WRITE_MANY: Final = "ReadWriteMany"
DEFAULT_SERVICE_TYPE: Final = "LoadBalancer"
STORAGE_TYPE_PVC: Final = "PersistentVolumeClaim"
STORAGE_TYPE_S3: Final = "S3"
DEFAULT_S3_REGION: Final = "us-east-1"
DEFAULT_S3_ACCESS_KEY_ID_KEY: Final = "accessKeyId"
DEFAULT_S3_SECRET_ACCESS_KEY_KEY: Final = "secretAccessKey"
# Five cron fields (minute hour day-of-month month day-of-week) or a macro; the operator parses it.
CRON_PATTERN: Final = (
    r"^(@(yearly|annually|monthly|weekly|daily|midnight|hourly)|[0-9A-Za-z*,/?-]+(\s+[0-9A-Za-z*,/?-]+){4})$"
)
# A Secret key (what `kubectl create secret --from-literal` accepts).
SecretKey = Annotated[str, Field(min_length=1, max_length=253, pattern=r"^[-._a-zA-Z0-9]+$")]


def _defaulted(value: ApiModel | list[str]) -> dict[str, Any]:
    """json_schema_extra that makes the apiserver default a field to `value` (as Python does)."""
    if isinstance(value, ApiModel):
        # `{}`: the nested fields' own defaults then fill the object in on the server.
        return {"default": value.model_dump(mode="json", by_alias=True, exclude_defaults=True)}
    return {"default": value}


def _default_access_modes() -> list[AccessModeName]:
    return [ACCESS_MODE_READ_WRITE_MANY]


class IssuerRef(ApiModel):
    """A cert-manager issuer that signs the registry's certificate."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": f"(has(self.group) && self.group != '{CERT_MANAGER_GROUP}')"
                    " || self.kind in ['Issuer', 'ClusterIssuer']",
                    "message": f"kind must be Issuer or ClusterIssuer for a {CERT_MANAGER_GROUP} issuer",
                    "fieldPath": ".kind",
                }
            ]
        }
    )

    name: DNS1123Subdomain
    """Name of the issuer."""
    kind: Annotated[str, Field(max_length=63, pattern=r"^[A-Z][A-Za-z0-9]*$")] = "Issuer"
    """`Issuer` (in the registry's namespace) or `ClusterIssuer`; another kind for an external issuer."""
    group: DNS1123Subdomain | None = None
    """API group of the issuer; `cert-manager.io` when omitted."""


class TLSSpec(ApiModel):
    """Where the registry's serving certificate comes from.

    Neither field: a certificate signed by the operator's self-signed root CA
    (Secret `image-registry-root-ca` in the operator namespace). `secretName` only: an existing
    `kubernetes.io/tls` Secret with `tls.crt`, `tls.key` and `ca.crt`. `issuerRef`: the operator
    creates a cert-manager Certificate, which writes into `secretName` when that is set too.
    """

    secret_name: DNS1123Subdomain | None = None
    """The Secret with the serving certificate (in the registry's namespace)."""
    issuer_ref: IssuerRef | None = None
    """A cert-manager issuer to request the certificate from."""


class StorageRequests(ApiModel):
    """Storage the claim requests."""

    storage: Quantity
    """Size of the volume, e.g. `8Gi`."""


class StorageLimits(ApiModel):
    """Storage limit of the claim."""

    storage: Quantity | None = None
    """Maximum size of the volume."""


class VolumeResources(ApiModel):
    """Resources of the registry's PersistentVolumeClaim."""

    requests: StorageRequests
    limits: StorageLimits | None = None


class PersistentVolumeClaimSpec(ApiModel):
    """The PersistentVolumeClaim (`imageregistry-<name>-pvc`) the images are stored on."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    # A bound claim's storage class cannot change; say so before the PVC update fails.
                    "rule": "has(self.storageClassName) == has(oldSelf.storageClassName)"
                    " && (!has(self.storageClassName) || self.storageClassName == oldSelf.storageClassName)",
                    "message": "storageClassName is immutable",
                    "fieldPath": ".storageClassName",
                }
            ]
        }
    )

    storage_class_name: (
        Annotated[
            str,
            Field(
                max_length=253,
                pattern=r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*)?$",
            ),
        ]
        | None
    ) = None
    """StorageClass of the claim; omitted or empty: the cluster's default class. Immutable."""
    access_modes: list[AccessModeName] = Field(
        default_factory=_default_access_modes,
        min_length=1,
        max_length=3,
        json_schema_extra={
            "x-kubernetes-list-type": "set",
            "x-kubernetes-validations": [{"rule": "self == oldSelf", "message": "accessModes is immutable"}],
            **_defaulted([ACCESS_MODE_READ_WRITE_MANY]),
        },
    )
    """Access modes of the claim. More than one replica needs ReadWriteMany (the default). Immutable."""
    resources: VolumeResources
    """Requested size (`requests.storage`) and optional limit."""
    delete_claim: bool = False
    """Delete the claim, and with it the images, when the ImageRegistry is deleted."""


class S3CredentialsSecretRef(ApiModel):
    """The Secret (in the registry's namespace) holding the S3 access key pair.

    The values reach the registry container only as environment variables from this Secret
    (`REGISTRY_STORAGE_S3_ACCESSKEY`/`_SECRETKEY`), never the rendered config."""

    name: DNS1123Subdomain
    """Name of the Secret."""
    access_key_id_key: SecretKey = DEFAULT_S3_ACCESS_KEY_ID_KEY
    """Key holding the access key id."""
    secret_access_key_key: SecretKey = DEFAULT_S3_SECRET_ACCESS_KEY_KEY
    """Key holding the secret access key."""


class S3StorageSpec(ApiModel):
    """An S3 bucket (AWS or an S3-compatible server: MinIO, Ceph RGW, ...), distribution's `s3` driver."""

    bucket: Annotated[str, Field(min_length=3, max_length=63, pattern=r"^[a-z0-9][a-z0-9.-]*[a-z0-9]$")]
    """Name of the bucket; it must exist."""
    region: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[a-z0-9-]+$")] = DEFAULT_S3_REGION
    """Region of the bucket (S3-compatible servers mostly accept any, e.g. `us-east-1`)."""
    region_endpoint: (
        Annotated[str, Field(max_length=2048, pattern=r"^https?://[^\s/?#]+(/[^\s?#]*)?$")] | None
    ) = None
    """Endpoint URL of an S3-compatible server, e.g. `https://minio.storage.svc:9000`; omitted: AWS."""
    force_path_style: bool = False
    """Address the bucket as `<endpoint>/<bucket>` instead of `<bucket>.<endpoint>` (most
    S3-compatible servers need this)."""
    root_directory: Annotated[str, Field(max_length=1024, pattern=r"^(/[A-Za-z0-9._-]+)*/?$")] | None = None
    """Key prefix of the registry's objects inside the bucket, e.g. `/registry`; omitted: the bucket root."""
    credentials_secret_ref: S3CredentialsSecretRef | None = None
    """Secret with the access key pair; omitted: the AWS SDK's default chain (e.g. an IAM role for the
    pod's ServiceAccount or the node)."""


class StorageSpec(ApiModel):
    """Where the images are stored."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "self.type == 'S3' ? has(self.s3) : !has(self.s3)",
                    "message": "s3 must be set exactly when type is S3",
                    "fieldPath": ".s3",
                }
            ]
        }
    )

    type: StorageType = STORAGE_TYPE_PVC
    """`PersistentVolumeClaim` (default: `spec.persistentVolumeClaim`) or `S3` (object storage, `s3`)."""
    s3: S3StorageSpec | None = None
    """The bucket, with type S3."""

    @model_validator(mode="after")
    def _s3_with_type_s3(self) -> StorageSpec:
        if (self.type == STORAGE_TYPE_S3) != (self.s3 is not None):
            raise ValueError("s3 must be set exactly when type is S3")
        return self


class GarbageCollectionSpec(ApiModel):
    """Scheduled `registry garbage-collect`. During a run the registry is read-only (pulls work,
    pushes are refused), so that no push can race the collector."""

    schedule: Annotated[str, Field(min_length=1, max_length=128, pattern=CRON_PATTERN)]
    """When to run, as a cron expression in UTC (`minute hour day-of-month month day-of-week`, e.g.
    `0 3 * * 0`), or `@daily`, `@weekly`, ...."""
    dry_run: bool = False
    """Only report what would be deleted (`--dry-run`)."""
    delete_untagged: bool = False
    """Also delete manifests no tag points at, and their blobs (`--delete-untagged`)."""


class ServiceSpec(ApiModel):
    """The registry's Service (named like the ImageRegistry)."""

    type: ServiceType = DEFAULT_SERVICE_TYPE
    """Service type; LoadBalancer makes the registry reachable from the nodes' container runtimes."""


class AclMatch(ApiModel):
    """docker_auth match conditions; omitted fields match anything.

    Values are docker_auth patterns: a glob (`library/*`), or a regular expression between slashes
    (`/^team-.*$/`); `${account}`, `${name}`, `${labels:namespace}` etc. are substituted.
    Unknown keys are kept, not pruned, and refused by the operator (Ready=False, InvalidSpec).
    """

    # A pruned typo (`repository:` for `name:`) would leave `match: {}`, which matches every
    # request. Kept, the key reaches the operator's validator, which names it and keeps the last
    # good docker_auth config. (CEL cannot refuse it at admission: it sees only declared fields.)
    model_config = ConfigDict(json_schema_extra={"x-kubernetes-preserve-unknown-fields": True})

    account: Annotated[str, Field(max_length=1024)] | None = None
    """The account (user) name."""
    type: Annotated[str, Field(max_length=1024)] | None = None
    """The resource type, e.g. `repository` or `registry`."""
    name: Annotated[str, Field(max_length=1024)] | None = None
    """The resource name, e.g. the repository `team-a/app`."""
    service: Annotated[str, Field(max_length=1024)] | None = None
    """The service the token is requested for."""
    ip: Annotated[str, Field(max_length=64)] | None = None
    """Client IP address or CIDR."""
    labels: dict[str, Annotated[str, Field(max_length=1024)]] | None = Field(default=None, max_length=32)
    """Account labels that must match (operator accounts carry `namespace`, `name`, `accessMode`)."""


class AclEntry(ApiModel):
    """One docker_auth ACL rule; the first rule that matches a request decides."""

    match: AclMatch
    """Which requests the rule applies to (`{}` matches all)."""
    actions: list[AclAction] = Field(max_length=4, json_schema_extra={"x-kubernetes-list-type": "set"})
    """Actions granted; `[]` denies, `["*"]` grants whatever was requested."""
    comment: Annotated[str, Field(max_length=1024)] | None = None
    """Free text, logged by docker_auth when the rule matches."""


class LabelSelectorRequirement(ApiModel):
    """One requirement of a label selector (metav1.LabelSelectorRequirement)."""

    key: Annotated[str, Field(min_length=1, max_length=317)]
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"]
    values: list[Annotated[str, Field(max_length=63)]] | None = Field(default=None, max_length=64)


class LabelSelector(ApiModel):
    """A label selector (metav1.LabelSelector): every part must match."""

    match_labels: dict[str, Annotated[str, Field(max_length=63)]] | None = None
    match_expressions: list[LabelSelectorRequirement] | None = Field(default=None, max_length=32)


class NamespacesSpec(ApiModel):
    """The namespaces whose ImagePushSecrets and ImagePullSecrets may get accounts of this registry:
    those named, and those whose labels match the selector. The registry's own namespace always may."""

    names: list[DNS1123Label] = Field(
        default_factory=list, max_length=256, json_schema_extra={"x-kubernetes-list-type": "set"}
    )
    """Namespaces allowed by name."""
    selector: LabelSelector | None = None
    """Namespaces allowed by their labels (needs the cluster-wide operator, which may read them)."""


class AuthSpec(ApiModel):
    """Authorisation of the registry's docker_auth."""

    namespaces: NamespacesSpec | None = None
    """Who may get credentials: when set, only secret CRs of these namespaces (and the registry's own)
    get accounts; others become Ready=False with reason NamespaceNotAllowed and lose their accounts.
    Unset: any namespace the operator watches."""
    repository_scope: Literal["Registry", "Namespace"] | None = None
    """Which repositories the default ACL lets an account touch: `Registry` (any; also when unset),
    or `Namespace`:
    an account of namespace N pushes and pulls only `N/...`, every account may pull `library/...`,
    and push accounts of the registry's own namespace may push `library/...` (shared base images).
    Ignored when `acl` is set (a custom ACL decides everything)."""

    acl: list[AclEntry] | None = Field(default=None, max_length=256)
    """docker_auth ACL replacing the default (push accounts push and pull, pull accounts pull,
    anonymous nothing). An empty list denies everything."""


class ImageRegistrySpec(ApiModel):
    """Desired state of an ImageRegistry."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    # All replicas mount the one claim, so only ReadWriteMany lets them spread over nodes;
                    # object storage is shared by nature.
                    "rule": "!has(self.replicas) || self.replicas <= 1"
                    " || (has(self.storage) && self.storage.type == 'S3')"
                    " || (has(self.persistentVolumeClaim)"
                    " && self.persistentVolumeClaim.accessModes.exists(m, m == 'ReadWriteMany'))",
                    "message": "more than one replica requires persistentVolumeClaim.accessModes"
                    " to contain ReadWriteMany, or storage.type S3",
                    "fieldPath": ".replicas",
                },
                {
                    "rule": "(has(self.storage) && self.storage.type == 'S3')"
                    " ? !has(self.persistentVolumeClaim) : has(self.persistentVolumeClaim)",
                    "message": "persistentVolumeClaim is required, unless storage.type is S3"
                    " (then it must be left out)",
                    "fieldPath": ".persistentVolumeClaim",
                },
                {
                    # The collector Job mounts the claim next to the registry pod.
                    "rule": "!has(self.garbageCollection) || !has(self.persistentVolumeClaim)"
                    " || self.persistentVolumeClaim.accessModes.exists(m, m != 'ReadWriteOncePod')",
                    "message": "garbageCollection needs a claim another pod can mount: an access mode"
                    " besides ReadWriteOncePod",
                    "fieldPath": ".garbageCollection",
                },
            ]
        }
    )

    replicas: Annotated[int, Field(ge=0, le=2**31 - 1, json_schema_extra={"format": "int32"})] = 1
    """Number of registry pods."""
    persistent_volume_claim: PersistentVolumeClaimSpec | None = None
    """The volume the images are stored on (storage type PersistentVolumeClaim, the default)."""
    storage: StorageSpec | None = None
    """Where the images are stored; omitted: the PersistentVolumeClaim."""
    garbage_collection: GarbageCollectionSpec | None = None
    """Scheduled garbage collection of unreferenced blobs; omitted: never."""
    tls: TLSSpec = Field(default_factory=TLSSpec, json_schema_extra=_defaulted(TLSSpec()))
    """Source of the registry's TLS certificate; `{}` uses the operator's self-signed CA."""
    service: ServiceSpec = Field(default_factory=ServiceSpec, json_schema_extra=_defaulted(ServiceSpec()))
    """How the registry is exposed."""
    auth: AuthSpec | None = None
    """Authorisation rules; omitted: the default ACL."""

    @model_validator(mode="after")
    def _storage_choice(self) -> ImageRegistrySpec:
        # The same rules as the CEL ones above, for objects that did not pass the API server.
        if self.uses_s3 == (self.persistent_volume_claim is not None):
            raise ValueError("persistentVolumeClaim is required, unless storage.type is S3 (then left out)")
        return self

    @property
    def uses_s3(self) -> bool:
        return self.storage is not None and self.storage.type == STORAGE_TYPE_S3


class GarbageCollectionRun(ApiModel):
    """The outcome of one garbage collection run."""

    start_time: Time
    """When the registry was switched to read-only for the run."""
    completion_time: Time | None = None
    """When the run ended (and the registry went back to read-write)."""
    result: GarbageCollectionResult
    """Succeeded or Failed."""
    dry_run: bool = False
    """Whether nothing was deleted on purpose (`dryRun`)."""
    blobs_deleted: Annotated[int, Field(ge=0)] | None = None
    """Blobs deleted (with dryRun: that would have been), as `registry garbage-collect` reported."""
    manifests_deleted: Annotated[int, Field(ge=0)] | None = None
    """Manifests deleted (or eligible, with dryRun)."""
    bytes_freed: Annotated[int, Field(ge=0)] | None = None
    """Storage freed, from the volume's size before and after (PersistentVolumeClaim storage only)."""
    job_name: Annotated[str, Field(max_length=63)] | None = None
    """The Job that ran the collector."""
    message: Annotated[str, Field(max_length=1024)] | None = None
    """Why the run failed, or the collector's summary line."""


class GarbageCollectionStatus(ApiModel):
    """Where garbage collection stands."""

    phase: GarbageCollectionPhase = "Idle"
    """Idle; ReadOnly (waiting for the pods to run read-only); Collecting (the Job runs)."""
    phase_time: Time | None = None
    """When the current phase began."""
    scheduled_time: Time | None = None
    """The schedule time of the current (or, when Idle, the last) run."""
    job_name: Annotated[str, Field(max_length=63)] | None = None
    """The Job of the current run."""
    last_run: GarbageCollectionRun | None = None
    """The last finished run."""


Fingerprint = Annotated[str, Field(max_length=64, pattern=r"^[0-9a-f]{64}$")]
TrustPhase = Literal["Stable", "Distributing", "Rolling"]
TokenKeyPhase = Literal["Stable", "Distributing", "Switching", "Retiring"]


class TrustedAuthority(ApiModel):
    """One CA certificate in `status.caBundle`."""

    fingerprint: Fingerprint
    """SHA-256 of the certificate (DER), hex."""
    subject: Annotated[str, Field(max_length=1024)] | None = None
    since: Time | None = None
    """When the operator first published it in the bundle."""


class ServedCertificate(ApiModel):
    """The serving certificate every registry pod was last seen serving (a completed rollout)."""

    secret_name: Annotated[str, Field(max_length=253)]
    fingerprint: Annotated[str, Field(max_length=64)]
    """Fingerprint of the certificate chain (what the pod template's hash covers)."""
    issuer: Fingerprint | None = None
    """The CA certificate that signed it, when known."""
    authorities: list[Fingerprint] = Field(default_factory=list, max_length=16)
    """The CAs clients were given for it; they stay in the bundle while it is served."""
    not_after: Time | None = None
    since: Time | None = None
    """When every pod was first seen serving it: the CAs only the previous certificate needed stay
    in the bundle for a grace period after that (pods still draining, endpoints catching up)."""


class TrustStatus(ApiModel):
    """Where a change of the registry's serving CA stands (see the README, "CA rollover")."""

    phase: TrustPhase = "Stable"
    """`Distributing`: a new CA is in `caBundle`, the pods still serve the previous certificate until
    the bundle is out; `Rolling`: the pods are being moved to the new certificate; `Stable`: the
    bundle holds what the served certificate needs (plus what the root CA is rolling to)."""
    message: Annotated[str, Field(max_length=1024)] | None = None
    authorities: list[TrustedAuthority] = Field(default_factory=list, max_length=16)
    served: ServedCertificate | None = None


class TokenKeyStatus(ApiModel):
    """Where a rollover of the token signing key stands."""

    phase: TokenKeyPhase = "Stable"
    """`Distributing`: every replica is told to trust the next key too; `Switching`: docker_auth moves
    to the next key; `Retiring`: the previous key is still trusted until its tokens expired."""
    since: Time | None = None
    message: Annotated[str, Field(max_length=1024)] | None = None


class ImageRegistryStatus(StatusBase):
    """Observed state of an ImageRegistry."""

    hostname: Annotated[str, Field(max_length=253)] | None = None
    """The registry's hostname, `<name>.<namespace>.<OPERATOR_DNS_ZONE>`."""
    tls_secret_name: Annotated[str, Field(max_length=253)] | None = None
    """The Secret holding the registry's serving certificate and `ca.crt`."""
    allowed_namespaces: Annotated[str, Field(max_length=4096)] | None = None
    """The namespaces whose push/pull secrets may get accounts, as `spec.auth.namespaces` says."""
    garbage_collection: GarbageCollectionStatus | None = None
    """Garbage collection: the run in progress and the last one."""
    password_schemes: Annotated[list[Annotated[str, Field(max_length=64)]], Field(max_length=8)] | None = None
    """The password hash schemes every pod of the registry verifies, set once all of them run this
    operator's sidecar. Generated accounts use the fast `sha256-salted-v1` only when it is listed
    (until then bcrypt), so an upgrade never hands out a credential an older sidecar refuses."""
    ca_bundle: Annotated[str, Field(max_length=65536)] | None = None
    """PEM CA certificates clients must trust for this registry: the `ca.crt` of its push and pull
    secrets and the node agent's files. During a CA change it holds the previous and the next CA."""
    trust: TrustStatus | None = None
    token_key: TokenKeyStatus | None = None


class ImageRegistry(Resource):
    """A container image registry (distribution) with docker_auth token authentication.

    Accounts (ImageRegistryAccount) in the registry's namespace can log in; ImagePushSecret and
    ImagePullSecret create rotating accounts and Secrets for it.
    """

    KIND: ClassVar[str] = KIND_IMAGE_REGISTRY
    PLURAL: ClassVar[str] = PLURAL_IMAGE_REGISTRIES

    api_version: Literal["registry.mgoltzsche.github.com/v1alpha1"] = API_VERSION
    kind: Literal["ImageRegistry"] = KIND_IMAGE_REGISTRY
    spec: ImageRegistrySpec
    # Omitted while empty: the API has no status until the operator writes one.
    status: ImageRegistryStatus = Field(default_factory=ImageRegistryStatus, exclude_if=is_empty)
