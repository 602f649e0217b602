#!/usr/bin/env bash
# Runs every fuzz target in the repository for a short while (default 8s each).
set -euo pipefail
cd "$(dirname "$0")/.."
t=${FUZZTIME:-8s}
grep -rHo --include='*_test.go' '^func Fuzz[A-Za-z0-9_]*' internal | sort -u | while IFS=: read -r file fn; do
	fn=${fn#func }
	pkg=./$(dirname "$file")
	echo "fuzz $pkg $fn ($t)"
	go test -run '^$' -fuzz "^${fn}\$" -fuzztime "$t" "$pkg" > /tmp/coffer-fuzz.log 2>&1 || { cat /tmp/coffer-fuzz.log; exit 1; }
done
