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
# The projection tests create a database each on this server.
export ANNALS_TEST_POSTGRES=${ANNALS_TEST_POSTGRES:-postgres://postgres@127.0.0.1:5432}

postgres_up() { pg_isready -q -d "$DATABASE_URL" 2>/dev/null; }
if ! postgres_up; then
    # On the project's machines Postgres is a local cluster that may only need starting.
    if command -v pg_ctlcluster >/dev/null 2>&1; then
        version=$(ls /etc/postgresql 2>/dev/null | sort -V | tail -n 1)
        [ -n "$version" ] && pg_ctlcluster --skip-systemctl-redirect "$version" main start 2>/dev/null || true
        for _ in $(seq 1 50); do postgres_up && break; sleep 0.2; done
    fi
    if ! postgres_up; then
        echo "error: Postgres does not answer at $DATABASE_URL; start it (for example" >&2
        echo "'pg_ctlcluster <version> main start', or 'docker compose up -d' with docker-compose.yml)" >&2
        echo "or point DATABASE_URL at one" >&2
        exit 1
    fi
fi
echo "KAFKA_BROKERS=$KAFKA_BROKERS${started_broker:+ (started by scripts/kafka-dev.sh)}"
echo "DATABASE_URL=$DATABASE_URL"

cargo test --workspace --locked "$@"
