#!/usr/bin/env bash
# Runs every fuzz target in the module for the given time each (default 10s).
set -euo pipefail
fuzztime=${1:-10s}
go=${GO:-go}
status=0
for pkg in $($go list ./...); do
  targets=$($go test -list '^Fuzz' "$pkg" 2>/dev/null | grep '^Fuzz' || true)
  for t in $targets; do
    echo "== $pkg $t ($fuzztime)"
    if ! $go test "$pkg" -run '^$' -fuzz "^${t}\$" -fuzztime "$fuzztime"; then
      status=1
    fi
  done
done
exit $status
