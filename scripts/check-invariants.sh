#!/usr/bin/env bash
# The architecture's dependency invariants (ARCHITECTURE.md, "Invariants"), checked.
set -euo pipefail
cd "$(dirname "$0")/.."

fail=0

# forbidden CRATE DEP WHY: DEP must not be anywhere in CRATE's normal (non-dev) tree.
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

# only_direct DEP OWNER WHY: no framework crate (annals-*) but OWNER depends on DEP
# directly. Applications, like the bank example, may use what they like.
only_direct() {
    local dep=$1 owner=$2 why=$3 crate direct found=0
    for crate in $(cargo metadata --locked --no-deps --format-version 1 |
        python3 -c 'import json,sys; print("\n".join(p["name"] for p in json.load(sys.stdin)["packages"]))'); do
        [ "$crate" = "$owner" ] && continue
        case "$crate" in annals-*) ;; *) continue ;; esac
        direct=$(cargo tree --locked -p "$crate" -e normal --depth 1 --prefix none --format '{p}')
        if grep -qE "^${dep} v" <<<"$direct"; then
            echo "VIOLATION: $crate uses $dep directly, but $why" >&2
            fail=1
            found=1
        fi
    done
    [ $found = 1 ] || echo "ok: only $owner uses $dep directly ($why)"
}

forbidden annals-core rdkafka "the core does no I/O"
forbidden annals-core sqlx "the core does no I/O"
forbidden annals-core tokio "the core needs no async runtime"
forbidden annals-kafka-store sqlx "the event store knows nothing of read models"
only_direct rdkafka annals-kafka-store "only the Kafka store knows rdkafka"
only_direct sqlx annals-projections "only the projections know sqlx"

exit $fail
