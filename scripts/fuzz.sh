#!/usr/bin/env bash
# Runs every fuzz target in the repository for a short while (default 8s each).
# Each package's fuzzing test binary is built once (instrumented, as
# `go test -fuzz` builds it) and run for each of its targets in the package's
# directory, with the go command's fuzz cache: one link per package instead
# of one per target.
set -euo pipefail
cd "$(dirname "$0")/.."
t=${FUZZTIME:-8s}
root=$(pwd)
bin=$(mktemp -d)
trap 'rm -rf "$bin"' EXIT
cache=$(go env GOCACHE)/fuzz
module=$(go list -m)
log=$bin/fuzz.log
grep -rHo --include='*_test.go' '^func Fuzz[A-Za-z0-9_]*' internal | sort -u | awk -F: '{sub(/^func /, "", $2); d=$1; sub(/\/[^\/]*$/, "", d); print d, $2}' | sort |
	while read -r dir fn; do
		test=$bin/$(echo "$dir" | tr / _).test
		if [ ! -x "$test" ]; then
			if ! go test -c -fuzz "^${fn}\$" -o "$test" "./$dir" > "$log" 2>&1; then
				cat "$log"
				exit 1
			fi
		fi
		echo "fuzz ./$dir $fn ($t)"
		for try in 1 2; do
			if (cd "$root/$dir" && "$test" -test.run '^$' -test.fuzz "^${fn}\$" -test.fuzztime "$t" \
				-test.fuzzcachedir "$cache/$module/$dir" -test.timeout 10m) > "$log" 2>&1; then
				break
			fi
			# Fuzzing can end a clean run with "context deadline exceeded"
			# when its workers stop late on a loaded machine; that found
			# nothing (no failing input is written), so it is run once more.
			if [ "$try" = 1 ] && grep -q 'context deadline exceeded' "$log" && ! grep -q 'Failing input written' "$log"; then
				echo "  (fuzzer stopped late, no failing input: running it again)"
				continue
			fi
			cat "$log"
			exit 1
		done
	done
