//! The core of **annals**, an event-sourcing and CQRS framework: aggregates that decide on
//! commands and evolve by events, the envelope every stored event travels in, codecs and
//! upcasters, the hash chain, the [`EventStore`] port with an in-memory implementation,
//! and a given/when/then test harness.
//!
//! This crate does no I/O of its own and depends on no Kafka, database or async runtime
//! crate; the stores that do live in their own crates and implement [`EventStore`].
//!
//! ```
//! use annals_core::prelude::*;
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Debug, Clone, PartialEq, Serialize, Deserialize, DomainEvent)]
//! enum CounterEvent {
//!     #[event(name = "CounterIncremented", version = 1)]
//!     Incremented { by: u32 },
//! }
//!
//! #[derive(Debug, Serialize, Deserialize, Command)]
//! enum CounterCommand {
//!     Increment {
//!         #[aggregate_id]
//!         id: String,
//!         by: u32,
//!     },
//! }
//!
//! #[derive(Debug, PartialEq, Serialize, Deserialize, thiserror::Error)]
//! enum CounterRejection {
//!     #[error("cannot increment by zero")]
//!     Zero,
//! }
//!
//! #[derive(Debug, Default, Serialize, Deserialize, Aggregate)]
//! #[aggregate(name = "counter", command = CounterCommand, event = CounterEvent, rejection = CounterRejection)]
//! struct Counter {
//!     value: u64,
//! }
//!
//! impl Counter {
//!     fn handle(&self, cmd: &CounterCommand, _: &CommandContext) -> Result<Vec<CounterEvent>, CounterRejection> {
//!         match cmd {
//!             CounterCommand::Increment { by: 0, .. } => Err(CounterRejection::Zero),
//!             CounterCommand::Increment { by, .. } => Ok(vec![CounterEvent::Incremented { by: *by }]),
//!         }
//!     }
//!
//!     fn apply(&mut self, event: &CounterEvent) {
//!         match event {
//!             CounterEvent::Incremented { by } => self.value += u64::from(*by),
//!         }
//!     }
//! }
//!
//! annals_core::testing::AggregateTest::<Counter>::new()
//!     .when(CounterCommand::Increment { id: "c-1".into(), by: 2 })
//!     .then_expect_events(vec![CounterEvent::Incremented { by: 2 }]);
//! ```

pub mod aggregate;
pub mod clock;
pub mod codec;
pub mod envelope;
pub mod error;
pub mod event;
pub mod hash;
pub mod ids;
pub mod memory;
pub mod metadata;
pub mod partition;
pub mod repository;
pub mod store;
pub mod testing;
pub mod upcast;

#[cfg(feature = "conformance")]
pub mod conformance;

pub use aggregate::{Aggregate, Command, CommandContext};
pub use clock::{Clock, IdGenerator, ManualClock, SequentialIds, SystemClock, UuidV7};
pub use codec::{Codec, CodecError, JsonCodec};
pub use envelope::{Envelope, RawEnvelope, RawPayload, UncommittedEvent};
pub use error::{ChainBreak, CommandError, Error, Location};
pub use event::{DomainEvent, EventTypeInfo};
pub use hash::EventHash;
pub use ids::{
    AggregateId, AggregateRef, CausationId, CommandId, CorrelationId, EventId, Offset, Partition,
    Position, Version,
};
pub use memory::MemoryEventStore;
pub use metadata::{Actor, Metadata};
pub use partition::{murmur2, partition_for};
pub use repository::{AggregateRepository, CommandGateway, Committed, Loaded};
pub use store::{EventStore, EventStream, ExpectedVersion};
pub use upcast::{Upcasted, Upcaster, Upcasters};

#[cfg(feature = "derive")]
pub use annals_derive::{Aggregate, Command, DomainEvent};

/// The names most programs need, for a glob import.
pub mod prelude {
    pub use crate::{
        Actor, Aggregate, AggregateId, Command, CommandContext, CommandError, CommandGateway,
        DomainEvent, Envelope, EventStore, ExpectedVersion, Metadata, Version,
    };
}

/// Paths used by the code that `annals-derive` generates. Not a public API.
#[doc(hidden)]
pub mod __private {
    pub use serde;
    pub use serde_json;
    pub use std::option::Option;
    pub use std::result::Result;
    pub use std::string::ToString;
    pub use std::vec::Vec;
}
