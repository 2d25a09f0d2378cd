//! Saga definitions: the business process as a list of typed steps.

use std::fmt::Debug;

use annals_core::{Aggregate, AggregateId, Command};
use chrono::TimeDelta;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// A long-running transaction across aggregates: steps run in order; when one fails for
/// good, the compensations of the steps that completed run in reverse order.
///
/// The saga's progress is itself event-sourced (see [`crate::SagaInstance`]), so it
/// survives crashes and moves with partition ownership like any aggregate.
pub trait Saga: Send + Sync + 'static {
    /// The saga type name; it names the saga's topics (`{prefix}.{NAME}.events`) and must
    /// be `[a-z0-9_-]`.
    const NAME: &'static str;
    /// What starts an instance (a transfer request, say).
    type Input: Serialize + DeserializeOwned + Clone + Debug + PartialEq + Send + Sync + 'static;
    /// Why an input is refused before anything is sent.
    type Invalid: std::error::Error
        + Serialize
        + DeserializeOwned
        + Clone
        + PartialEq
        + Send
        + Sync
        + 'static;

    /// The aggregate types the steps send commands to (their command topics must exist
    /// before the saga runs on Kafka).
    fn participants() -> &'static [&'static str];

    /// Checks the input. A refused input starts nothing and moves no money.
    fn validate(input: &Self::Input) -> Result<(), Self::Invalid>;

    /// The steps, in order.
    fn steps() -> &'static [Step<Self::Input>];
}

/// A command a step sends, addressed to one aggregate instance of any type.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Outgoing {
    /// The target's aggregate type (`Aggregate::TYPE`).
    pub aggregate_type: String,
    /// The target aggregate.
    pub aggregate_id: AggregateId,
    /// The command's type name, for logs.
    pub command_type: String,
    /// The command, as its serde document.
    pub command: serde_json::Value,
}

impl Outgoing {
    /// A typed command for aggregate type `A`.
    pub fn to<A: Aggregate>(command: &A::Command) -> Result<Self, BuildError> {
        Ok(Self {
            aggregate_type: A::TYPE.to_owned(),
            aggregate_id: command.aggregate_id(),
            command_type: command.command_type().to_owned(),
            command: serde_json::to_value(command)?,
        })
    }
}

/// How a step's transient failures are retried before the saga compensates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included.
    pub max_attempts: u32,
    /// Wait before the second attempt; doubles for each further one.
    pub backoff: TimeDelta,
}

impl RetryPolicy {
    /// Three attempts, 200 ms apart, then doubling.
    pub const DEFAULT: RetryPolicy = RetryPolicy {
        max_attempts: 3,
        backoff: TimeDelta::milliseconds(200),
    };

    /// The wait before attempt `next` (2, 3, ...).
    pub fn delay_before(&self, next: u32) -> TimeDelta {
        let doublings = next.saturating_sub(2).min(16);
        self.backoff * 2i32.pow(doublings)
    }
}

/// Why a step's command could not be built (it did not serialize).
pub type BuildError = serde_json::Error;

/// Builds the command of a step (or of its compensation) from the saga's input.
pub type CommandFn<I> = fn(&I) -> Result<Outgoing, BuildError>;

/// One step of a saga.
#[derive(Debug)]
pub struct Step<I: 'static> {
    /// The step's name, stable across versions (it seeds command ids).
    pub name: &'static str,
    /// The command that performs the step.
    pub action: CommandFn<I>,
    /// The command that undoes it, if it can be undone.
    pub compensation: Option<CommandFn<I>>,
    /// Retries of transient failures (conflicts).
    pub retry: RetryPolicy,
    /// How long the step may take. The command carries this deadline: a participant
    /// refuses it once the deadline has passed, so after the deadline the saga can learn
    /// for certain whether the step happened and compensate accordingly.
    pub deadline: Option<TimeDelta>,
}
