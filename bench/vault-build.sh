#!/bin/sh
# Builds a Vault server binary for coffer-bench's fetch comparison, in a
# throwaway Go module outside the repository: Vault never enters Coffer's
# go.mod. Slow (20-30 minutes on 2 cores the first time) and large (~500 MB
# of module downloads, a 490 MB binary); keep it out of CI.
#
#   bench/vault-build.sh [workdir] [output]    defaults: /tmp/vaultbuild /tmp/tools/vault
#
# Why it is not just `go build` (details in docs/benchmarks.md, section 3):
# Vault's own go.mod replaces github.com/hashicorp/vault/{api,sdk} with its
# ./api and ./sdk directories, which a module depending on Vault does not
# see: it gets the *published* api and sdk, which never match a Vault tag
# exactly, and the module proxy here serves tagged versions only. v1.21.4
# does not compile against sdk v0.21.0; v1.20.0 needs something between sdk
# v0.18.0 (lacks PluginRunner.Download) and v0.19.0 (four small API
# changes). So: v1.20.0 + sdk v0.19.0, with a copy of Vault's source patched
# in those four places (a missing SystemView method stubbed, an added
# argument, an inlined helper, a rekey-cancel call). None of them is on the
# path of a KV v2 read.
# GOSUMDB=off: the checksum database had no entry for one of Vault's plugin
# dependencies (vault-plugin-secrets-gcp v0.22.0: 404), which stops `go get`.
set -eu
dir=${1:-/tmp/vaultbuild}
out=${2:-/tmp/tools/vault}
mkdir -p "$dir" "$(dirname "$out")"
cd "$dir"
export GOSUMDB=off GOFLAGS=-mod=mod
[ -f go.mod ] || go mod init vaultbuild
go get github.com/hashicorp/vault@v1.20.0 github.com/hashicorp/vault/sdk@v0.19.0

src=$(go list -m -f '{{.Dir}}' github.com/hashicorp/vault@v1.20.0)
rm -rf vault-src
cp -r "$src" vault-src
chmod -R u+w vault-src
sed -i 's/connutil.GetCloudSQLAuthOptions(credentials, false)/connutil.GetCloudSQLAuthOptions(credentials, false, false)/' \
	vault-src/plugins/database/mysql/connection_producer.go
sed -i 's/p.Type.IsPQC()/isPQC(p.Type)/' vault-src/builtin/logical/transit/backend.go
sed -i 's/polReq.KeyType.IsPQC()/isPQC(polReq.KeyType)/' vault-src/builtin/logical/transit/path_keys.go
sed -i 's/fn = client.Sys().RekeyCancelWithNonce$/fn = func(string) error { return client.Sys().RekeyCancel() }/;
	s/fn = client.Sys().RekeyRecoveryKeyCancelWithNonce$/fn = func(string) error { return client.Sys().RekeyRecoveryKeyCancel() }/' \
	vault-src/command/operator_rekey.go
cat > vault-src/builtin/logical/transit/zz_bench.go <<'GO'
package transit

import "github.com/hashicorp/vault/sdk/helper/keysutil"

func isPQC(t keysutil.KeyType) bool {
	return t == keysutil.KeyType_ML_DSA || t == keysutil.KeyType_HYBRID || t == keysutil.KeyType_SLH_DSA
}
GO
cat > vault-src/vault/zz_bench.go <<'GO'
package vault

import (
	"context"
	"errors"

	"github.com/hashicorp/vault/sdk/rotation"
)

func (d dynamicSystemView) GetRotationInformation(context.Context, *rotation.RotationInfoRequest) (*rotation.RotationInfoResponse, error) {
	return nil, errors.New("not implemented")
}
GO
go mod edit -replace github.com/hashicorp/vault=./vault-src
go build -o "$out" github.com/hashicorp/vault
"$out" version
