#!/usr/bin/env bash
# Builds the heavy test tools that Coffer's tests run as real servers, once,
# into a fixed cache directory outside the repository (never into go.mod):
#
#   vault   HashiCorp Vault v1.21.1   (keystore and Transit tests)  ~7-17 min cold on 2 cores
#   etcd    etcd, etcdctl, etcdutl v3.6.16    (store and HA tests)           ~1-4 min cold
#   helm    Helm v3.22.0              (lint and render deploy/helm)  ~3-15 min cold
#   containerd  containerd, containerd-shim-runc-v2, ctr v2.2.9
#           (containerd runtime and NRI tests; runc comes from Debian) ~3-4 min cold
#   kube    kube-apiserver + kubelet v1.34.4 (the Kubernetes end-to-end
#           tier and the server's API-server cross-check)        ~10-12 min cold
#
#   usage: scripts/test-tools.sh [vault|etcd|containerd|helm ...]   (default: all)
#   prints nothing but progress; the binaries land in $COFFER_TOOLS (default
#   /var/cache/coffer-tools): vault-v1.21.1/vault, etcd-v3.6.16/{etcd,etcdctl,etcdutl}.
# Each build is skipped when its binary is already there, so a warm run takes
# a second. Tests find the tools through the same variable (see
# internal/testtools), and skip with a clear message when they are missing.
set -euo pipefail
cd "$(dirname "$0")/.."
T=${COFFER_TOOLS:-/var/cache/coffer-tools}
VAULT_VERSION=v1.21.1
ETCD_VERSION=v3.6.16
HELM_VERSION=v3.22.0
CONTAINERD_VERSION=v2.2.9
KUBE_VERSION=v1.34.4
mkdir -p "$T"

vault() {
	local dir=$T/vault-$VAULT_VERSION
	if [ -x "$dir/vault" ]; then return; fi
	local recipe=../shared/tools/build-vault.sh
	if [ ! -f "$recipe" ]; then
		echo "test-tools: $recipe not found (shared/ sits beside the repository); cannot build Vault" >&2
		return 1
	fi
	echo "test-tools: building Vault $VAULT_VERSION into $dir (7-17 min on 2 cores, once)"
	nice -n 10 bash "$recipe" "$dir" "$VAULT_VERSION" >"$T/vault-build.log" 2>&1 ||
		{ tail -30 "$T/vault-build.log" >&2; return 1; }
	rm -rf "$dir/build-$VAULT_VERSION" # the throwaway module; the Go caches keep what a rebuild needs
}

etcd() {
	local dir=$T/etcd-$ETCD_VERSION
	if [ -x "$dir/etcd" ] && [ -x "$dir/etcdctl" ] && [ -x "$dir/etcdutl" ]; then return; fi
	echo "test-tools: building etcd $ETCD_VERSION into $dir (1-4 min, once)"
	# etcd's server module has replace directives, so `go install` refuses it:
	# build it from a throwaway module instead.
	local b
	b=$(mktemp -d)
	(
		cd "$b"
		go mod init etcdbuild >/dev/null 2>&1
		go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION" "go.etcd.io/etcd/etcdctl/v3@$ETCD_VERSION" \
			"go.etcd.io/etcd/etcdutl/v3@$ETCD_VERSION" >/dev/null 2>&1
		mkdir -p "$dir.tmp"
		CGO_ENABLED=0 nice -n 10 go build -trimpath -o "$dir.tmp/etcd" go.etcd.io/etcd/server/v3
		CGO_ENABLED=0 nice -n 10 go build -trimpath -o "$dir.tmp/etcdctl" go.etcd.io/etcd/etcdctl/v3
		CGO_ENABLED=0 nice -n 10 go build -trimpath -o "$dir.tmp/etcdutl" go.etcd.io/etcd/etcdutl/v3
	) >"$T/etcd-build.log" 2>&1 || { tail -30 "$T/etcd-build.log" >&2; rm -rf "$b" "$dir.tmp"; return 1; }
	rm -rf "$b" "$dir"
	mv "$dir.tmp" "$dir"
}

helm() {
	local dir=$T/helm-$HELM_VERSION
	if [ -x "$dir/helm" ]; then return; fi
	echo "test-tools: building Helm $HELM_VERSION into $dir (3-15 min, once)"
	mkdir -p "$dir.tmp"
	GOBIN="$dir.tmp" CGO_ENABLED=0 nice -n 10 go install "helm.sh/helm/v3/cmd/helm@$HELM_VERSION" >"$T/helm-build.log" 2>&1 ||
		{ tail -30 "$T/helm-build.log" >&2; rm -rf "$dir.tmp"; return 1; }
	rm -rf "$dir"
	mv "$dir.tmp" "$dir"
}

containerd() {
	local dir=$T/containerd-$CONTAINERD_VERSION
	if [ -x "$dir/containerd" ] && [ -x "$dir/containerd-shim-runc-v2" ] && [ -x "$dir/ctr" ]; then return; fi
	echo "test-tools: building containerd $CONTAINERD_VERSION into $dir (3-4 min, once)"
	# containerd's v2 module has no replace directives: go install builds it
	# outside any module. no_btrfs: the btrfs snapshotter needs C headers.
	rm -rf "$dir.tmp"
	mkdir -p "$dir.tmp"
	local m=github.com/containerd/containerd/v2/cmd
	GOBIN=$dir.tmp CGO_ENABLED=0 GOFLAGS=-trimpath nice -n 10 go install -tags no_btrfs \
		"$m/containerd@$CONTAINERD_VERSION" "$m/containerd-shim-runc-v2@$CONTAINERD_VERSION" "$m/ctr@$CONTAINERD_VERSION" \
		>"$T/containerd-build.log" 2>&1 || { tail -30 "$T/containerd-build.log" >&2; rm -rf "$dir.tmp"; return 1; }
	rm -rf "$dir"
	mv "$dir.tmp" "$dir"
}

kube() {
	local dir=$T/kube-$KUBE_VERSION
	if [ -x "$dir/kube-apiserver" ] && [ -x "$dir/kubelet" ]; then return; fi
	echo "test-tools: building kube-apiserver and kubelet $KUBE_VERSION into $dir (10-12 min, once)"
	# k8s.io/kubernetes points its staging modules at ./staging with replace
	# directives: build from a throwaway module that replaces each with its
	# published version instead.
	local b m minor
	b=$(mktemp -d)
	minor=${KUBE_VERSION#v1.}
	minor=${minor%%.*}
	(
		set -e
		cd "$b"
		m=$(go mod download -json "k8s.io/kubernetes@$KUBE_VERSION" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p')
		{
			printf 'module kubebuild\n\ngo 1.24.0\n\nrequire k8s.io/kubernetes %s\n\nreplace (\n' "$KUBE_VERSION"
			grep '=> ./staging' "$m" | awk -v v="v0.${KUBE_VERSION#v1.}" '{print "\t" $1 " => " $1 " " v}'
			echo ')'
		} >go.mod
		printf '//go:build tools\n\npackage tools\n\nimport (\n\t_ "k8s.io/kubernetes/cmd/kube-apiserver"\n\t_ "k8s.io/kubernetes/cmd/kubelet"\n)\n' >tools.go
		go mod tidy
		local ld="-s -w -X k8s.io/component-base/version.gitVersion=$KUBE_VERSION -X k8s.io/component-base/version.gitMajor=1"
		ld="$ld -X k8s.io/component-base/version.gitMinor=$minor -X k8s.io/client-go/pkg/version.gitVersion=$KUBE_VERSION"
		mkdir -p "$dir.tmp"
		CGO_ENABLED=0 nice -n 10 go build -trimpath -ldflags "$ld" -o "$dir.tmp/kube-apiserver" k8s.io/kubernetes/cmd/kube-apiserver
		CGO_ENABLED=0 nice -n 10 go build -trimpath -ldflags "$ld" -o "$dir.tmp/kubelet" k8s.io/kubernetes/cmd/kubelet
	) >"$T/kube-build.log" 2>&1 || { tail -30 "$T/kube-build.log" >&2; rm -rf "$b" "$dir.tmp"; return 1; }
	rm -rf "$b" "$dir"
	mv "$dir.tmp" "$dir"
}

[ $# -gt 0 ] || set -- etcd vault containerd helm kube
for tool in "$@"; do
	case $tool in
	vault | etcd | containerd | helm | kube) "$tool" ;;
	*) echo "test-tools: unknown tool $tool (vault, etcd, containerd, helm, kube)" >&2; exit 2 ;;
	esac
done
