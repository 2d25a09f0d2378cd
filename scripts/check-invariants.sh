#!/usr/bin/env bash
# The architecture's dependency invariants (ARCHITECTURE.md, "Invariants"), checked.
set -euo pipefail
cd "$(dirname "$0")/.."

fail=0
# forbidden CRATE DEP WHY: DEP must not be in CRATE's normal (non-dev, non-build) tree.
forbidden() {
    local crate=$1 dep=$2 why=$3 tree
    tree=$(cargo tree --locked -p "$crate" -e normal --prefix none --format '{p}')
    if grep -qE "^${dep} v" <<<"$tree"; then
        echo "VIOLATION: $crate depends on $dep, but $why" >&2
        cargo tree --locked -p "$crate" -e normal -i "$dep" >&2 || true
        fail=1
    else
        echo "ok: $crate does not depend on $dep ($why)"
    fi
}

forbidden annals-core rdkafka "the core does no I/O"
forbidden annals-core sqlx "the core does no I/O"
forbidden annals-core tokio "the core needs no async runtime"

exit $fail
