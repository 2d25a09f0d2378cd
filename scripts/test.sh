#!/usr/bin/env bash
# The one test command: installs and starts what the tests need (a Kafka-protocol broker),
# checks Postgres, then runs every test of the workspace against them.
#
#   bash scripts/test.sh            # from a fresh clone
#
# KAFKA_BROKERS / DATABASE_URL, when set, point the tests at services you run yourself.
set -euo pipefail
cd "$(dirname "$0")/.."

export ANNALS_REQUIRE_SERVICES=1   # a missing service fails the tests, never skips them

if [ -z "${KAFKA_BROKERS:-}" ]; then
    # Stop the broker afterwards only if this run started it.
    if ! bash scripts/kafka-dev.sh status >/dev/null 2>&1; then
        started_broker=1
        trap 'bash scripts/kafka-dev.sh stop >/dev/null 2>&1 || true' EXIT
    fi
    KAFKA_BROKERS=$(bash scripts/kafka-dev.sh start | tail -n 1 | sed 's/^KAFKA_BROKERS=//')
    export KAFKA_BROKERS
fi
export DATABASE_URL=${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}
echo "KAFKA_BROKERS=$KAFKA_BROKERS${started_broker:+ (started by scripts/kafka-dev.sh)}"
echo "DATABASE_URL=$DATABASE_URL"

cargo test --workspace --locked "$@"
