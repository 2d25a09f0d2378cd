//! The command bus: commands travel on `{prefix}.{aggregate}.commands`, partitioned like
//! the events; the processor that owns a partition turns each command into events, a
//! snapshot, a reply and the consumed offset in one Kafka transaction.

pub mod bus;
pub mod processor;
pub mod protocol;
pub mod reactions;
mod runtime;
mod worker;
