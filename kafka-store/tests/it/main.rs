//! Tests of the Kafka store against a real Kafka-protocol broker (`KAFKA_BROKERS`;
//! `bash scripts/test.sh` starts one).

mod bad_commands;
mod broker_loss;
mod bus;
mod child;
mod conformance;
mod corrupt;
mod crash;
mod fencing;
mod handover;
mod harness;
mod model;
mod snapshots;
mod support;
mod topics;
