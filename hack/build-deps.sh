#!/usr/bin/env bash
# Builds the real components the tests and `make run` need, from the Go module proxy with the
# machine's Go toolchain (no release binaries are downloaded), and installs skopeo from Debian.
#
#   hack/build-deps.sh [component ...]     components: kubernetes etcd kwok docker_auth registry
#                                                      debian-tools (skopeo, busybox) cert-manager
#                                                      toxiproxy promtool (+ hack/promql-names)
#                                                      containerd (containerd + ctr, node-agent e2e)
#                                                      moto (S3-compatible server, from PyPI)
#   default: kubernetes etcd kwok registry cert-manager toxiproxy promtool containerd moto debian-tools.
#   docker_auth is listed but the Go module
#   proxy reachable on the project's machines refuses it (HTTP 403).
#
# Results are cached outside the clone, keyed by version:
#   ${REGISTRY_OPERATOR_CACHE:-~/.cache/registry-operator}/bin/<component>-<version>/
# A component is rebuilt only when its directory lacks the `.complete` marker. Concurrent runs
# serialise on a per-component flock, so two racing runs build each component once.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=versions.env
source "$ROOT/hack/versions.env"
CACHE=${REGISTRY_OPERATOR_CACHE:-$HOME/.cache/registry-operator}
mkdir -p "$CACHE/bin" "$CACHE/build" "$CACHE/locks" "$CACHE/logs"

export GOTOOLCHAIN=local GOFLAGS=-trimpath GOPROXY=${GOPROXY:-https://proxy.golang.org,direct}
export CGO_ENABLED=0

COMPONENT="-" STEP="-" LOG=/dev/null
on_error() {
  echo "ERROR: building component '$COMPONENT' failed at step '$STEP'." >&2
  if [ -f "$LOG" ]; then echo "--- last lines of $LOG:" >&2; tail -n 25 "$LOG" >&2; fi
}
trap on_error ERR

step() { STEP=$1; echo "==> [$COMPONENT] $STEP" >&2; }
run() { "$@" >>"$LOG" 2>&1; }

# build_component NAME VERSION FUNCTION: run FUNCTION in a staging dir under a lock, publish atomically.
build_component() {
  local name=$1 version=$2 fn=$3
  local dest="$CACHE/bin/$name-$version"
  COMPONENT=$name STEP="check cache" LOG="$CACHE/logs/$name-$version.log"
  [ -f "$dest/.complete" ] && { echo "==> [$name] $version cached in $dest" >&2; return 0; }
  exec {lockfd}>"$CACHE/locks/$name.lock"
  step "waiting for lock"
  flock "$lockfd"
  if [ -f "$dest/.complete" ]; then
    echo "==> [$name] $version was built by a concurrent run" >&2
  else
    local stage
    stage=$(mktemp -d "$CACHE/bin/.$name-$version.XXXXXX")
    chmod 755 "$stage"
    : >"$LOG"
    local started=$SECONDS
    "$fn" "$stage" "$version"
    touch "$stage/.complete"
    rm -rf "$dest"
    mv "$stage" "$dest"
    echo "==> [$name] $version built in $((SECONDS - started))s -> $dest" >&2
  fi
  flock -u "$lockfd"
  exec {lockfd}>&-
}

build_kubernetes() {
  local out=$1 v=$2 minor
  minor=${v#v1.}; minor=${minor%%.*}
  local work="$CACHE/build/kubernetes-$v"
  mkdir -p "$work" && cd "$work"
  step "create throwaway module"
  printf 'module local/k8sbuild\n\ngo 1.26.0\n' >go.mod
  cat >tools.go <<'GO'
//go:build tools

package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
GO
  run go mod edit -require="k8s.io/kubernetes@$v"
  step "download k8s.io/kubernetes@$v (large, first run only)"
  local gomod
  gomod=$(go mod download -json "k8s.io/kubernetes@$v" | python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')
  step "replace staging modules with v0.${v#v1.}"
  local m
  for m in $(sed -n 's#^[[:space:]]*\(k8s\.io/[^ ]*\) => \./staging/.*#\1#p' "$gomod"); do
    go mod edit -replace="$m=$m@v0.${v#v1.}"
  done
  step "go mod tidy"
  run go mod tidy
  step "compile kube-apiserver, kube-controller-manager, kube-scheduler, kubectl (10-25 min cold)"
  local ldf="" pkg date
  date=$(date -u +%Y-%m-%dT%H:%M:%SZ)
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldf+=" -X $pkg.gitVersion=$v -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
    ldf+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=$date"
  done
  run go build -tags tools -ldflags "-s -w $ldf" -o "$out/" \
    k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
    k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubectl
  step "check /version stamp"
  "$out/kube-apiserver" --version | grep -q "Kubernetes $v" || {
    echo "kube-apiserver --version does not report $v" >>"$LOG"; false; }
}

build_etcd() {
  local out=$1 v=$2
  local work="$CACHE/build/etcd-$v"
  mkdir -p "$work" && cd "$work"
  step "create throwaway module"
  printf 'module local/etcdbuild\n\ngo 1.26.0\n' >go.mod
  printf '//go:build tools\n\npackage tools\n\nimport _ "go.etcd.io/etcd/server/v3"\n' >tools.go
  step "go get go.etcd.io/etcd/server/v3@$v"
  run go get "go.etcd.io/etcd/server/v3@$v"
  step "compile etcd"
  run go build -o "$out/etcd" go.etcd.io/etcd/server/v3
}

build_kwok() {
  local out=$1 v=$2
  step "go install sigs.k8s.io/kwok/cmd/kwok@$v"
  GOBIN="$out" run go install "sigs.k8s.io/kwok/cmd/kwok@$v"
  step "collect default stages from the kwok module"
  local dir f
  dir=$(cd "$CACHE/build" && go mod download -json "sigs.k8s.io/kwok@$v" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')
  : >"$out/stages.yaml"
  for f in node/fast/node-initialize.yaml node/heartbeat-with-lease/node-heartbeat-with-lease.yaml \
           pod/fast/pod-ready.yaml pod/fast/pod-complete.yaml pod/fast/pod-delete.yaml; do
    { echo "---"; cat "$dir/kustomize/stage/$f"; } >>"$out/stages.yaml"
  done
}

build_docker_auth() {
  local out=$1 v=$2
  step "go install github.com/cesanta/docker_auth/auth_server@$DOCKER_AUTH_MODULE_VERSION"
  GOBIN="$out" run go install "github.com/cesanta/docker_auth/auth_server@$DOCKER_AUTH_MODULE_VERSION"
}

build_registry() {
  local out=$1 v=$2
  step "go install github.com/distribution/distribution/v3/cmd/registry@$v"
  GOBIN="$out" run go install "github.com/distribution/distribution/v3/cmd/registry@$v"
}

build_toxiproxy() {
  local out=$1 v=$2
  step "go install github.com/Shopify/toxiproxy/v2/cmd/server@$v"
  GOBIN="$out" run go install "github.com/Shopify/toxiproxy/v2/cmd/server@$v"
  mv "$out/server" "$out/toxiproxy-server"
}

build_cert_manager() {
  # From v1.12 on, cert-manager's binaries are separate Go modules that the module proxy does not
  # serve, so the pin is the last release whose cmd/controller lives in the root module. Its go.mod
  # has a replace directive, which `go install` refuses: a throwaway module copies it.
  local out=$1 v=$2
  local work="$CACHE/build/cert-manager-$v"
  mkdir -p "$work" && cd "$work"
  step "create throwaway module"
  printf 'module local/cmbuild\n\ngo 1.26.0\n' >go.mod
  printf '//go:build tools\n\npackage tools\n\nimport _ "github.com/cert-manager/cert-manager/cmd/controller"\n' >tools.go
  run go mod edit -require="github.com/cert-manager/cert-manager@$v"
  local gomod dir line
  step "copy upstream replace directives"
  gomod=$(go mod download -json "github.com/cert-manager/cert-manager@$v" | python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')
  while read -r line; do
    run go mod edit -replace="$line"
  done < <(sed -n 's#^replace \([^ ]*\) \([^ ]*\) => \([^ ]*\) \([^ ]*\)$#\1@\2=\3@\4#p' "$gomod")
  step "go mod tidy"
  run go mod tidy
  step "compile cert-manager controller"
  run go build -tags tools -o "$out/cert-manager-controller" github.com/cert-manager/cert-manager/cmd/controller
  step "collect CRDs"
  dir=$(go mod download -json "github.com/cert-manager/cert-manager@$v" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')
  mkdir -p "$out/crds"
  local f
  for f in "$dir"/deploy/crds/crd-*.yaml; do
    # These are Helm templates: drop the templated metadata.labels block (it ends at `spec:`).
    sed '/^  labels:$/,/^spec:$/{/^spec:$/!d}' "$f" >"$out/crds/$(basename "$f")"
  done
  if grep -l '{{' "$out"/crds/*.yaml >>"$LOG"; then
    echo "template markers left in the CRDs above" >>"$LOG"; false
  fi
}

build_promtool() {
  # promtool checks and unit-tests manifests/monitoring's rules; promql-names (hack/promql-names, our
  # own code) lists the metric names of PromQL expressions with Prometheus' parser. Both come from
  # the same Prometheus module version, compiled in one throwaway module.
  local out=$1 v=$PROMETHEUS_VERSION  # $2 is the cache key: the version plus the helper's hash
  local work="$CACHE/build/promtool-$v"
  rm -rf "$work" && mkdir -p "$work/promql-names" && cd "$work"
  step "create throwaway module"
  printf 'module local/promtoolbuild\n\ngo 1.26.0\n' >go.mod
  printf '//go:build tools\n\npackage tools\n\nimport _ "github.com/prometheus/prometheus/cmd/promtool"\n' >tools.go
  cp "$ROOT/hack/promql-names/main.go" promql-names/main.go
  run go mod edit -require="github.com/prometheus/prometheus@$v"
  step "go mod tidy"
  run go mod tidy
  step "compile promtool and promql-names (a few minutes cold)"
  local ldf="-X github.com/prometheus/common/version.Version=$v -X github.com/prometheus/common/version.Branch=release"
  run go build -tags tools -ldflags "-s -w $ldf" -o "$out/" github.com/prometheus/prometheus/cmd/promtool ./promql-names
  step "check promtool runs"
  "$out/promtool" --version >>"$LOG" 2>&1
  echo 'up' | "$out/promql-names" | grep -qx up
}

# containerd and ctr: the node-agent e2e runs a real containerd whose config_path is the agent's
# certs.d. CGO stays off: the cgo-only snapshotters (btrfs, devmapper) are left out; the test uses
# the native snapshotter.
build_containerd() {
  local out=$1 v=$2
  step "go install github.com/containerd/containerd/v2/cmd/{containerd,ctr}@$v (large)"
  GOBIN="$out" run go install -tags "no_btrfs no_devmapper no_zfs" \
    -ldflags "-s -w -X github.com/containerd/containerd/v2/version.Version=$v" \
    "github.com/containerd/containerd/v2/cmd/containerd@$v" \
    "github.com/containerd/containerd/v2/cmd/ctr@$v"
  step "check version stamp"
  "$out/containerd" --version | grep -q "$v" || {
    echo "containerd --version does not report $v" >>"$LOG"; false; }
}

# moto's standalone server (`moto_server`, PyPI `moto[server]`): the S3-compatible object store the
# registry's s3 driver is tested against. Its own virtualenv in the cache, not the project's .venv:
# it pulls in flask/werkzeug/boto3 and pins of its own, which must neither conflict with nor mask
# the operator's dependency set (the operator never imports it; the tests only talk S3 to it).
# Run as `<dir>/venv/bin/python -m moto.server` (a venv's python still works after the move).
build_moto() {
  local out=$1 v=$2
  step "python3 -m venv"
  run python3 -m venv "$out/venv"
  step "pip install moto[server]==$v"
  run "$out/venv/bin/python" -m pip install --quiet --disable-pip-version-check "moto[server]==$v"
  printf '#!/bin/sh\nexec "$(dirname "$0")/venv/bin/python" -m moto.server "$@"\n' >"$out/moto_server"
  chmod 755 "$out/moto_server"
}

# skopeo (the registry client of the e2e tests) and busybox (its wget is what docker_auth's image
# has, so the ext_auth shim is tested with it) come from Debian.
install_debian_tools() {
  COMPONENT=debian-tools STEP="check" LOG="$CACHE/logs/debian-tools.log"
  if command -v skopeo >/dev/null && [ -f /etc/containers/policy.json ] && command -v busybox >/dev/null; then
    echo "==> [debian-tools] $(skopeo --version), busybox installed" >&2; return 0
  fi
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  exec {lockfd}>"$CACHE/locks/apt.lock"
  flock "$lockfd"
  step "apt-get update"
  run $sudo apt-get update
  step "apt-get install skopeo busybox"
  DEBIAN_FRONTEND=noninteractive run $sudo apt-get install -y --no-install-recommends \
    skopeo golang-github-containers-common busybox
  flock -u "$lockfd"
}

# The promtool directory is keyed by the Prometheus version and a hash of hack/promql-names, so an
# edit to the helper rebuilds it on the next run.
promql_names_hash() { sha256sum "$ROOT/hack/promql-names/main.go" | cut -c1-12; }

main() {
  command -v go >/dev/null || { echo "ERROR: Go is required to build the test components" >&2; exit 1; }
  local want=("$@")
  [ ${#want[@]} -gt 0 ] || want=(kubernetes etcd kwok registry cert-manager toxiproxy promtool containerd moto debian-tools)
  local c
  for c in "${want[@]}"; do
    case $c in
      kubernetes) build_component kubernetes "$KUBERNETES_VERSION" build_kubernetes ;;
      etcd) build_component etcd "$ETCD_VERSION" build_etcd ;;
      kwok) build_component kwok "$KWOK_VERSION" build_kwok ;;
      docker_auth) build_component docker_auth "$DOCKER_AUTH_VERSION" build_docker_auth ;;
      registry) build_component registry "$DISTRIBUTION_VERSION" build_registry ;;
      cert-manager) build_component cert-manager "$CERT_MANAGER_VERSION" build_cert_manager ;;
      toxiproxy) build_component toxiproxy "$TOXIPROXY_VERSION" build_toxiproxy ;;
      promtool) build_component promtool "$PROMETHEUS_VERSION-$(promql_names_hash)" build_promtool ;;
      containerd) build_component containerd "$CONTAINERD_VERSION" build_containerd ;;
      moto) build_component moto "$MOTO_VERSION" build_moto ;;
      skopeo|debian-tools) install_debian_tools ;;
      *) echo "ERROR: unknown component '$c'" >&2; exit 2 ;;
    esac
  done
}

main "$@"
