#!/usr/bin/env bash
# End-to-end on a real kind cluster with real containers: the operator image, the stock registry and
# docker_auth images, and a skopeo Job that pushes and pulls with the secrets the operator wrote.
# Needs Docker, kind and kubectl, and internet access for the stock images. It is NOT run on the
# project's CI machines (no Docker engine there); `make test` covers everything else locally.
#
#   hack/kind-e2e.sh              KEEP_CLUSTER=1 keeps the cluster afterwards
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CLUSTER=${KIND_CLUSTER:-registry-operator-e2e}
IMAGE=registry-operator:kind-e2e
NS=kind-e2e
SKOPEO_IMAGE=${SKOPEO_IMAGE:-quay.io/skopeo/stable:v1.16}

for tool in docker kind kubectl; do
  command -v "$tool" >/dev/null || { echo "ERROR: $tool is required for the kind e2e" >&2; exit 1; }
done

step() { echo "==> $*" >&2; }
cleanup() {
  if [ "${KEEP_CLUSTER:-0}" != 1 ]; then kind delete cluster --name "$CLUSTER" >/dev/null 2>&1 || true; fi
}
trap cleanup EXIT

step "build the operator image"
docker build -t "$IMAGE" "$ROOT"

step "create kind cluster $CLUSTER"
kind get clusters | grep -qx "$CLUSTER" || kind create cluster --name "$CLUSTER" --wait 180s
kind load docker-image "$IMAGE" --name "$CLUSTER"

step "install CRDs and the operator (cluster-wide) with the local image"
overlay="$ROOT/_output/kind-overlay"
mkdir -p "$overlay"
cat >"$overlay/kustomization.yaml" <<YAML
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
- ../../manifests/cluster-wide
images:
- name: ghcr.io/registry-operator/registry-operator
  newName: registry-operator
  newTag: kind-e2e
YAML
kubectl apply --server-side -k "$ROOT/manifests/crds"
kubectl wait --for=condition=Established --timeout=60s crd --all
kubectl apply --server-side -k "$overlay"
kubectl -n registry-operator rollout status deployment/registry-operator --timeout=180s

step "apply the examples (self-signed registry, push/pull secrets, build env) in namespace $NS"
kubectl create namespace "$NS" --dry-run=client -o yaml | kubectl apply -f -
kubectl apply -n "$NS" -k "$ROOT/manifests/examples/registry-self-signed"
kubectl wait -n "$NS" --for=condition=Ready --timeout=300s imageregistry/registry
kubectl apply -n "$NS" -k "$ROOT/manifests/examples/secrets"
kubectl apply -n "$NS" -k "$ROOT/manifests/examples/build-env"
kubectl wait -n "$NS" --for=condition=Ready --timeout=120s imagepushsecret/example imagepullsecret/example
kubectl wait -n "$NS" --for=condition=Ready --timeout=180s imagebuildenv/example

host=$(kubectl get -n "$NS" imageregistry registry -o jsonpath='{.status.hostname}')
step "push and pull through docker_auth with the generated secrets ($host)"
kubectl delete -n "$NS" job skopeo --ignore-not-found
kubectl apply -n "$NS" -f - <<YAML
apiVersion: batch/v1
kind: Job
metadata: {name: skopeo}
spec:
  backoffLimit: 0
  template:
    spec:
      restartPolicy: Never
      containers:
      - name: skopeo
        image: $SKOPEO_IMAGE
        command: [sh, -ec]
        args:
        - |
          mkdir -p /tmp/certs && cp /push/ca.crt /tmp/certs/ca.crt
          skopeo copy --dest-cert-dir /tmp/certs --dest-authfile /push/config.json \
            docker://docker.io/library/busybox:1.36 docker://$host/$NS/busybox:e2e
          skopeo inspect --cert-dir /tmp/certs --authfile /pull/.dockerconfigjson docker://$host/$NS/busybox:e2e
          if skopeo copy --dest-cert-dir /tmp/certs --dest-authfile /pull/.dockerconfigjson \
               docker://docker.io/library/busybox:1.36 docker://$host/$NS/busybox:pull-must-fail; then
            echo "FAIL: the pull secret could push"; exit 1
          fi
          if skopeo inspect --cert-dir /tmp/certs --no-creds docker://$host/$NS/busybox:e2e; then
            echo "FAIL: anonymous pull worked"; exit 1
          fi
          echo "kind e2e: push, pull and refusals OK"
        volumeMounts:
        - {name: push, mountPath: /push}
        - {name: pull, mountPath: /pull}
      volumes:
      - {name: push, secret: {secretName: imagepushsecret-example}}
      - {name: pull, secret: {secretName: imagepullsecret-example}}
YAML
if ! kubectl wait -n "$NS" --for=condition=Complete --timeout=300s job/skopeo; then
  kubectl logs -n "$NS" job/skopeo || true
  echo "ERROR: the skopeo job failed" >&2
  exit 1
fi
kubectl logs -n "$NS" job/skopeo | tail -n 3
step "kind e2e passed"
