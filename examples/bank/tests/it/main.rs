//! Tests of the bank example: the HTTP API over a real socket, and transfers as sagas
//! on Kafka.

mod http;
mod kill9;
mod support;
mod transfers;
