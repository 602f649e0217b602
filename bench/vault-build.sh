#!/bin/sh
# Builds a Vault server binary for coffer-bench's fetch comparison, in a
# throwaway Go module outside the repository: Vault never enters Coffer's
# go.mod. Slow (about 30 minutes on 2 cores) and large (~500 MB of module
# downloads); keep it out of CI.
#
#   bench/vault-build.sh [workdir] [output]    defaults: /tmp/vaultbuild /tmp/tools/vault
#
# Why these choices (see docs/benchmarks.md):
# - v1.20.0: the Vault main module is built against the *published* api and
#   sdk modules (its own go.mod replaces them with ./api and ./sdk, which a
#   dependent module does not see); v1.21.4 does not compile against the
#   published sdk v0.21.0 (ActivationFunc signature), v1.20.0 with sdk
#   v0.18.0 does.
# - GOSUMDB=off: the checksum database had no entry for one of Vault's
#   plugin dependencies (vault-plugin-secrets-gcp v0.22.0: 404), which stops
#   `go get`. Only this throwaway module is affected.
set -eu
dir=${1:-/tmp/vaultbuild}
out=${2:-/tmp/tools/vault}
mkdir -p "$dir" "$(dirname "$out")"
cd "$dir"
[ -f go.mod ] || go mod init vaultbuild
GOSUMDB=off GOFLAGS=-mod=mod go get github.com/hashicorp/vault@v1.20.0
GOSUMDB=off GOFLAGS=-mod=mod go build -o "$out" github.com/hashicorp/vault
"$out" version
