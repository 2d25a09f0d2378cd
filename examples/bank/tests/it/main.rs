//! Tests of the bank example: the HTTP API over a real socket, and transfers as sagas
//! on Kafka.

mod cli_sagas;
mod http;
mod kill9;
mod read_models;
mod support;
mod transfers;
