#!/usr/bin/env bash
# Quick versions of every Coffer benchmark (a few seconds each), printing
# their figures; the full runs and their results are in docs/benchmarks.md.
#
#   scripts/bench.sh            quick sizes (about two minutes in all)
#   scripts/bench.sh --short    smallest sizes, as CI runs it: checks that the
#                               harness works, asserts nothing about timings
#   BENCH_SHORT=1               same as --short
#   BENCH_OUT=dir               keep JSON reports and PNG plots there
#   VAULT_BIN=/path/to/vault    also run the Vault comparison (see the doc)
#
# It exits non-zero only when a benchmark fails to run. The real-container
# benchmarks need root and Docker: without them they are skipped, unless
# COFFER_REQUIRE_DOCKER=1 (as in CI), which makes their absence an error.
set -euo pipefail
cd "$(dirname "$0")/.."

short=${BENCH_SHORT:-0}
[ "${1:-}" = "--short" ] && short=1
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
out=${BENCH_OUT:-$tmp/out}
mkdir -p "$out"

step() { printf '\n==> %s\n' "$*"; }

have_docker=0
if [ "$(id -u)" = 0 ] && command -v docker >/dev/null && docker version >/dev/null 2>&1; then
	have_docker=1
elif [ "${COFFER_REQUIRE_DOCKER:-}" = 1 ]; then
	echo "bench: COFFER_REQUIRE_DOCKER=1 but Docker is not usable (root and a running engine needed)" >&2
	exit 1
fi

step "build"
CGO_ENABLED=0 go build -o "$tmp/bin/" ./cmd/coffer-server ./cmd/coffer-agent ./cmd/coffer-bench

if [ "$short" = 1 ]; then
	bt=1x
else
	bt=1s
fi

step "package benchmarks: policy, seal, audit, catalog (-benchtime $bt)"
go test -run '^$' -bench . -benchtime "$bt" ./internal/policy/ ./internal/seal/ ./internal/audit/ ./internal/catalog/

step "scanner (small generated image; the large one: docs/benchmarks-scan.md)"
go test -run '^$' -bench 'BenchmarkScan$|BenchmarkDetect' -benchtime 1x ./internal/scan/

if [ "$have_docker" = 1 ]; then
	step "tmpfs deliverer on real containers"
	if [ "$short" = 1 ]; then
		go test -run '^$' -bench 'ApplySequential' -benchtime 3x ./internal/deliver/tmpfs/
	else
		go test -run '^$' -bench . -benchtime 3x ./internal/deliver/tmpfs/
	fi
else
	step "tmpfs deliverer: skipped (needs root and Docker)"
fi

bench=("$tmp/bin/coffer-bench")
if [ "$short" = 1 ]; then
	fanout=(--agents 10 --containers 5 --rotations 2 --revocations 1 --bursts 1 --burst-size 10 --settle 100ms)
	fetch=(--concurrency 4 --secrets 20 --duration 1s --warmup 200ms)
	dock=(--containers 4 --start-batch 2 --rotations 2 --revocations 1 --settle 100ms)
	upstream=(--secrets 20 --agents 2 --rounds 2 --interval 1s --hint-poll 5s --window 2s)
else
	fanout=(--agents 100 --containers 10 --rotations 10 --revocations 5 --bursts 2 --burst-size 100 --settle 200ms)
	fetch=(--concurrency 16 --secrets 200 --duration 3s)
	dock=(--containers 20 --start-batch 10 --rotations 10 --revocations 5)
	upstream=(--secrets 200 --agents 4 --rounds 5 --hint-poll 20s --window 20s)
fi

step "coffer-bench fanout ${fanout[*]}"
"${bench[@]}" fanout -q "${fanout[@]}" --json "$out/fanout.json" --plot "$out/fanout.png"

step "coffer-bench fetch ${fetch[*]}"
if [ -n "${VAULT_BIN:-}" ]; then
	fetch+=(--vault "$VAULT_BIN")
fi
"${bench[@]}" fetch -q "${fetch[@]}" --json "$out/fetch.json" --plot "$out/fetch.png"

if [ "$have_docker" = 1 ]; then
	step "coffer-bench docker ${dock[*]}"
	"${bench[@]}" docker -q "${dock[@]}" --json "$out/docker.json" --plot "$out/docker.png"
else
	step "coffer-bench docker: skipped (needs root and Docker)"
fi

# Linked secrets need a Vault binary: VAULT_BIN, or the one scripts/test-tools.sh caches.
vault_bin="${VAULT_BIN:-/var/cache/coffer-tools/vault-v1.21.1/vault}"
if [ -x "$vault_bin" ]; then
	step "coffer-bench upstream ${upstream[*]}"
	"${bench[@]}" upstream -q --vault "$vault_bin" "${upstream[@]}" --json "$out/upstream.json" --plot ""
else
	step "coffer-bench upstream: skipped (no Vault binary; set VAULT_BIN or run scripts/test-tools.sh)"
fi

if [ -n "${BENCH_OUT:-}" ]; then
	step "reports and plots in $out"
fi
echo
echo "bench: all benchmarks ran"
