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
#[aggregate(name = "Bank Account", command = CounterCommand, event = CounterEvent, rejection = CounterRejection)]
struct Counter {
    value: u64,
}

impl Counter {
    fn handle(
        &self,
        _: &CounterCommand,
        _: &CommandContext,
    ) -> Result<Vec<CounterEvent>, CounterRejection> {
        Ok(vec![CounterEvent::Incremented { by: 1 }])
    }

    fn apply(&mut self, _: &CounterEvent) {}
}

fn main() {}

