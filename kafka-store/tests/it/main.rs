//! Tests of the Kafka store against a real Kafka-protocol broker (`KAFKA_BROKERS`;
//! `bash scripts/test.sh` starts one).

mod bus;
mod conformance;
mod model;
mod support;
