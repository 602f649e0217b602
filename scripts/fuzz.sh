#!/usr/bin/env bash
# Runs every fuzz target in the repository for a short while (default 8s each).
set -euo pipefail
cd "$(dirname "$0")/.."
t=${FUZZTIME:-8s}
grep -rHo --include='*_test.go' '^func Fuzz[A-Za-z0-9_]*' internal | sort -u | while IFS=: read -r file fn; do
	fn=${fn#func }
	pkg=./$(dirname "$file")
	echo "fuzz $pkg $fn ($t)"
	for try in 1 2; do
		if go test -run '^$' -fuzz "^${fn}\$" -fuzztime "$t" "$pkg" > /tmp/coffer-fuzz.log 2>&1; then
			break
		fi
		# go test -fuzz can end a clean run with "context deadline exceeded"
		# when its workers stop late on a loaded machine; that found nothing
		# (no failing input is written), so it is run once more.
		if [ "$try" = 1 ] && grep -q 'context deadline exceeded' /tmp/coffer-fuzz.log && ! grep -q 'Failing input written' /tmp/coffer-fuzz.log; then
			echo "  (fuzzer stopped late, no failing input: running it again)"
			continue
		fi
		cat /tmp/coffer-fuzz.log
		exit 1
	done
done
