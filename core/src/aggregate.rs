//! Aggregates and commands: the write side's decide/evolve pair.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde::de::DeserializeOwned;
use uuid::Uuid;

use crate::clock::derived_id;
use crate::event::DomainEvent;
use crate::ids::{AggregateId, CommandId};
use crate::metadata::Metadata;

/// A consistency boundary that decides on commands and evolves by applying its events.
///
/// Both methods are pure: no I/O and no clock reads. Time and ids arrive in the
/// [`CommandContext`], so loading an aggregate by replaying its events always gives the
/// same state. Derive it with `#[derive(Aggregate)]` rather than implementing it by hand.
pub trait Aggregate: Default + Serialize + DeserializeOwned + Send + Sync + 'static {
    /// The stable aggregate type name; it names the event topic (`{prefix}.{TYPE}.events`).
    const TYPE: &'static str;
    /// The commands this aggregate decides on.
    type Command: Command;
    /// The events it emits and applies.
    type Event: DomainEvent;
    /// Why a command was refused. Sent back over the command bus, hence serde.
    type Rejection: std::error::Error + Serialize + DeserializeOwned + Send + Sync + 'static;

    /// Decides: the events a command produces in the current state, or why not.
    fn handle(
        &self,
        command: &Self::Command,
        ctx: &CommandContext,
    ) -> Result<Vec<Self::Event>, Self::Rejection>;

    /// Evolves: the state after an event. Must accept every event `handle` can return.
    fn apply(&mut self, event: &Self::Event);
}

/// A command addressed to one aggregate instance.
///
/// Derive it with `#[derive(Command)]` and mark the target with `#[aggregate_id]`.
pub trait Command: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// The aggregate instance this command is for.
    fn aggregate_id(&self) -> AggregateId;

    /// A stable name for logs and errors (`Deposit`).
    fn command_type(&self) -> &'static str;
}

/// What a command handler may know besides the state and the command: the time and the
/// identity of the request. Filled in by the runtime, never read from globals.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandContext {
    /// When the command is being handled.
    pub now: DateTime<Utc>,
    /// Who and why.
    pub metadata: Metadata,
}

impl CommandContext {
    /// A context for one command.
    pub fn new(now: DateTime<Utc>, metadata: Metadata) -> Self {
        Self { now, metadata }
    }

    /// The command's id.
    pub fn command_id(&self) -> CommandId {
        self.metadata.command_id
    }

    /// An id minted deterministically from the command id and `name`, for new entities a
    /// handler creates: retrying the command mints the same id.
    pub fn derived_id(&self, name: &str) -> Uuid {
        derived_id(self.metadata.command_id.0, name)
    }
}
