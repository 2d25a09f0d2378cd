-- The projections of annals: one row per projection. Each version of a read model lives
-- in schema "{projection}__v{version}"; readers use the views in schema "{projection}",
-- which point at live_version.
CREATE TABLE annals_projections (
    projection       text PRIMARY KEY,
    kind             text NOT NULL CHECK (kind IN ('document', 'sql')),
    aggregates       text[] NOT NULL,
    topics           text[] NOT NULL,
    live_version     int NOT NULL,
    building_version int,
    last_version     int NOT NULL,
    last_error       text,
    last_error_at    timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now()
);

-- (projection, version, topic, partition) -> the offset of the next record to apply.
-- Advanced by compare-and-set in the transaction that writes the read model.
-- high_water: the highest next_offset ever stored; records below it were seen before,
-- so a handler sees them as a replay. events_per_sec: the runner's recent rate.
CREATE TABLE annals_projection_offsets (
    projection     text NOT NULL,
    version        int NOT NULL,
    topic          text NOT NULL,
    partition      int NOT NULL,
    next_offset    bigint NOT NULL DEFAULT 0 CHECK (next_offset >= 0),
    high_water     bigint NOT NULL DEFAULT 0,
    events_per_sec double precision NOT NULL DEFAULT 0,
    updated_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (projection, version, topic, partition)
);

-- Poison events, parked per key (document id, or the SQL projection's key) in the
-- transaction that advances the offset past them. behind: parked only because an
-- earlier event of the same key is parked (order is kept per key).
CREATE TABLE annals_dead_letters (
    id             bigserial PRIMARY KEY,
    projection     text NOT NULL,
    version        int NOT NULL,
    topic          text NOT NULL,
    partition      int NOT NULL,
    "offset"       bigint NOT NULL,
    key            text NOT NULL,
    event_id       uuid NOT NULL,
    event_type     text NOT NULL,
    aggregate_type text NOT NULL,
    aggregate_id   text NOT NULL,
    sequence       bigint NOT NULL,
    envelope       jsonb NOT NULL,
    payload        bytea NOT NULL,
    error          text NOT NULL,
    attempts       int NOT NULL,
    behind         boolean NOT NULL,
    state          text NOT NULL DEFAULT 'parked' CHECK (state IN ('parked', 'retried', 'skipped')),
    parked_at      timestamptz NOT NULL DEFAULT now(),
    resolved_at    timestamptz,
    UNIQUE (projection, version, topic, partition, "offset")
);
CREATE INDEX annals_dead_letters_parked ON annals_dead_letters (projection, version, key)
    WHERE state = 'parked';

-- Blue-green rebuilds: one row per version built beside the live one.
CREATE TABLE annals_rebuilds (
    projection   text NOT NULL,
    version      int NOT NULL,
    from_version int NOT NULL,
    state        text NOT NULL CHECK (state IN ('building', 'switched', 'aborted')),
    started_at   timestamptz NOT NULL DEFAULT now(),
    finished_at  timestamptz,
    PRIMARY KEY (projection, version)
);
