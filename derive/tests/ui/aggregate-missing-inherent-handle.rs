use annals_core::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, DomainEvent)]
enum CounterEvent {
    #[event(name = "CounterIncremented", version = 1)]
    Incremented { by: u32 },
}

#[derive(Debug, Serialize, Deserialize, Command)]
enum CounterCommand {
    Increment(#[aggregate_id] String),
}

#[derive(Debug, Serialize, Deserialize, thiserror::Error)]
#[error("rejected")]
struct CounterRejection;

#[derive(Default, Serialize, Deserialize, Aggregate)]
#[aggregate(name = "counter", command = CounterCommand, event = CounterEvent, rejection = CounterRejection)]
struct Counter {
    value: u64,
}

// `handle` is missing: the derived `Aggregate::handle` must not call itself.
impl Counter {
    fn apply(&mut self, _: &CounterEvent) {}
}

fn main() {}
