//! The annals showcase bank: accounts with deposits and withdrawals, written with the
//! derive macros and run unchanged on the in-memory store or on Kafka.

pub mod demo;
pub mod domain;
pub mod http;
pub mod read_models;
pub mod service;
pub mod services;
pub mod transfer_read_model;
