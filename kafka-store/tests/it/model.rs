//! A small aggregate for the tests: a counter with a limit.

use annals_core::{Aggregate, Command, CommandContext, DomainEvent};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, DomainEvent)]
pub(crate) enum CounterEvent {
    #[event(name = "CounterAdded", version = 1)]
    Added { by: u32, total: u64 },
}

#[derive(Debug, Clone, Serialize, Deserialize, Command)]
pub(crate) enum CounterCommand {
    Add {
        #[aggregate_id]
        id: String,
        by: u32,
    },
    /// Carries a payload of any size, to test size limits.
    Note {
        #[aggregate_id]
        id: String,
        text: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub(crate) enum CounterRejection {
    #[error("adding {by} would pass the limit of {limit}")]
    OverLimit { by: u32, limit: u64 },
}

pub(crate) const LIMIT: u64 = 1_000_000;

#[derive(Debug, Default, Clone, Serialize, Deserialize, Aggregate)]
#[aggregate(name = "counter", command = CounterCommand, event = CounterEvent, rejection = CounterRejection)]
pub(crate) struct Counter {
    pub total: u64,
}

impl Counter {
    fn handle(
        &self,
        command: &CounterCommand,
        _: &CommandContext,
    ) -> Result<Vec<CounterEvent>, CounterRejection> {
        match command {
            CounterCommand::Add { by, .. } => {
                let total = self.total + u64::from(*by);
                if total > LIMIT {
                    return Err(CounterRejection::OverLimit {
                        by: *by,
                        limit: LIMIT,
                    });
                }
                Ok(vec![CounterEvent::Added { by: *by, total }])
            }
            CounterCommand::Note { .. } => Ok(vec![]),
        }
    }

    fn apply(&mut self, event: &CounterEvent) {
        let CounterEvent::Added { total, .. } = event;
        self.total = *total;
    }
}
