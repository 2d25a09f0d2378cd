#!/usr/bin/env bash
# The one test command: installs and starts what the tests need (a Kafka-protocol broker),
# checks Postgres, then runs every test of the workspace against them.
#
#   bash scripts/test.sh            # from a fresh clone
#
# KAFKA_BROKERS / DATABASE_URL, when set, point the tests at services you run yourself.
# A broker this script starts is restarted empty before each crate's tests: the test
# broker (Tansu, memory storage) slows down as transactional ids pile up in it
# (docs/kafka-brokers.md), and every test makes its own topics anyway.
set -euo pipefail
cd "$(dirname "$0")/.."

export ANNALS_REQUIRE_SERVICES=1   # a missing service fails the tests, never skips them

own_broker=""
if [ -z "${KAFKA_BROKERS:-}" ]; then
    if bash scripts/kafka-dev.sh status >/dev/null 2>&1; then
        echo "note: using the broker already running (scripts/kafka-dev.sh status)"
    else
        own_broker=1
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
echo "KAFKA_BROKERS=$KAFKA_BROKERS${own_broker:+ (started by scripts/kafka-dev.sh)}"
echo "DATABASE_URL=$DATABASE_URL"

# Build everything first, so that no broker ages while the compiler works.
cargo test --workspace --locked --no-run "$@"

packages=$(cargo metadata --locked --no-deps --format-version 1 |
    python3 -c 'import json,sys; print(" ".join(sorted(p["name"] for p in json.load(sys.stdin)["packages"])))')
log=$(mktemp)
for package in $packages; do
    if [ -n "$own_broker" ]; then
        bash scripts/kafka-dev.sh stop >/dev/null
        bash scripts/kafka-dev.sh start >/dev/null
    fi
    echo "==> cargo test -p $package"
    cargo test --locked -p "$package" "$@" 2>&1 | tee -a "$log"
done

# One closing line for the whole run, summed over every test binary.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "\ntests: %d passed, %d failed\n", p, f }' "$log"
rm -f "$log"
