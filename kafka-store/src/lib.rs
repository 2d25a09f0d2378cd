//! Partitioned Kafka topics as the event store of **annals**.
//!
//! One topic per aggregate type (`{prefix}.{aggregate}.events`), keyed by aggregate id,
//! placed by murmur2 like every Kafka client, never deleted or compacted. Each partition
//! has a single writer holding the transactional id `{app}.{aggregate}.{partition}`:
//! taking it fences any earlier writer, the writer restores every aggregate's head from
//! the log, checks expected versions against it and writes the events of a command in one
//! transaction. Reads verify sequences and hash chains. The record format is specified in
//! `docs/wire-format.md`.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use annals_kafka_store::{KafkaEventStore, KafkaStoreOptions};
//! let store = KafkaEventStore::connect(
//!     KafkaStoreOptions::new("127.0.0.1:9092").topic_prefix("bank"),
//! )
//! .await?;
//! # Ok(()) }
//! ```

pub mod command;
mod error;
pub mod inspect;
mod kafka;
mod options;
mod reader;
mod store;
pub mod subscription;
pub mod topics;
mod txn;
pub mod wire;
mod writer;

pub use command::bus::CommandBus;
pub use command::processor::{CommandProcessor, ProcessorHandle};
pub use error::KafkaStoreError;
pub use options::KafkaStoreOptions;
pub use store::KafkaEventStore;
