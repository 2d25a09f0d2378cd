//! Tests of annals-projections against real Kafka (`KAFKA_BROKERS`) and Postgres
//! (127.0.0.1:5432, or `ANNALS_TEST_POSTGRES`). Each test creates a database and topics
//! of its own.

mod exactly_once;
mod handover;
mod kill9;
mod memory;
mod model;
mod poison;
mod rebuild;
mod replay;
mod status;
mod support;
