//! Reactions make an aggregate drive others (a saga, a process manager): the events it
//! records send commands, the answers come back to it as commands, and time passing
//! wakes it. The processor records the events, sends the commands they imply and commits
//! the consumed input in one Kafka transaction, so a step is taken exactly once.

use annals_core::{Aggregate, AggregateId, CommandId, Envelope, Metadata};
use chrono::{DateTime, Utc};

use super::protocol::Outcome;

/// A command to send to another aggregate, in the same transaction as the event that
/// caused it.
#[derive(Debug, Clone, PartialEq)]
pub struct Outbound {
    /// The target's aggregate type.
    pub aggregate_type: String,
    /// The target aggregate.
    pub aggregate_id: AggregateId,
    /// The command as the target's serde document.
    pub command: serde_json::Value,
    /// Its metadata; the command id must be deterministic so that resends deduplicate.
    pub metadata: Metadata,
}

/// What a processor does for aggregate type `A` besides storing its events.
pub trait Reactions<A: Aggregate>: Send + Sync + 'static {
    /// The aggregate types commands are sent to (their command topics must exist).
    fn targets(&self) -> Vec<String>;

    /// The commands to send because `event` was recorded.
    fn outbox(&self, event: &Envelope<A::Event>) -> Vec<Outbound>;

    /// The command for aggregate `aggregate_id` when the answer to one of its commands
    /// arrives; `None` ignores the answer.
    fn on_reply(
        &self,
        aggregate_id: &AggregateId,
        command_id: CommandId,
        outcome: &Outcome,
    ) -> Option<A::Command>;

    /// When the aggregate next wants [`Self::tick`], if ever.
    fn wake_at(&self, state: &A) -> Option<DateTime<Utc>>;

    /// The command that lets time pass for one aggregate.
    fn tick(&self, aggregate_id: &AggregateId) -> A::Command;
}

/// The id under which an answer to command `answered` is handed to the aggregate that
/// sent it: the same answer delivered twice is the same command, which the processor
/// deduplicates.
pub fn answer_command_id(answered: CommandId) -> CommandId {
    CommandId(annals_core::clock::derived_id(answered.0, "annals.answer"))
}
