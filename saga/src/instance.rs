//! The saga instance: an aggregate whose events are the saga's progress and audit trail.

use std::marker::PhantomData;

use annals_core::clock::derived_id;
use annals_core::{AggregateId, Command, CommandId, DomainEvent, EventTypeInfo};
use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};

use crate::definition::{Outgoing, Saga};

/// After this many failed compensation attempts the saga is parked as stuck.
pub const COMPENSATION_ATTEMPTS_BEFORE_STUCK: u32 = 5;
/// After this many resends of an in-doubt command without an answer the saga is parked
/// as stuck (the participant is unreachable).
pub const RESENDS_BEFORE_STUCK: u32 = 8;
/// Wait between resends of a command whose outcome is unknown.
pub const RESEND_INTERVAL: TimeDelta = TimeDelta::seconds(2);

/// Where a saga instance is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SagaStatus {
    /// Not started.
    #[default]
    New,
    /// Running its steps.
    Running,
    /// Undoing completed steps after a failure.
    Compensating,
    /// Every step succeeded.
    Completed,
    /// A step failed and every completed step was undone.
    Compensated,
    /// Cannot make progress without an operator (see `reason`).
    Stuck,
    /// An operator gave up on it; nothing more is sent.
    Abandoned,
}

impl SagaStatus {
    /// Whether the saga will send nothing more on its own.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            SagaStatus::Completed | SagaStatus::Compensated | SagaStatus::Abandoned
        )
    }
}

/// Whether a command undoes or performs a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Performs the step.
    Forward,
    /// Undoes it.
    Compensation,
}

/// How a participant answered a command, as the saga sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum StepOutcome {
    /// The command took effect.
    Done,
    /// The participant refused for good (a domain rejection, an expired deadline).
    Refused {
        /// Why.
        reason: String,
    },
    /// The command did not take effect but may if tried again (a version conflict).
    Retryable {
        /// Why.
        reason: String,
    },
}

/// The events of a saga instance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(bound = "I: Serialize + serde::de::DeserializeOwned")]
pub enum SagaEvent<I> {
    /// The saga started with this input.
    Started {
        /// The input.
        input: I,
    },
    /// A step's or compensation's command was sent (the first time for this attempt).
    CommandSent {
        /// Which step.
        step: usize,
        /// Performs or undoes it.
        direction: Direction,
        /// The attempt, from 1.
        attempt: u32,
        /// Deterministic per (saga, step, direction, attempt).
        command_id: CommandId,
        /// The command.
        command: Outgoing,
        /// After this the participant refuses the command.
        deadline: Option<DateTime<Utc>>,
        /// When it was sent.
        at: DateTime<Utc>,
    },
    /// The same command was sent again, to learn its outcome (same command id).
    CommandResent {
        /// Which step.
        step: usize,
        /// Performs or undoes it.
        direction: Direction,
        /// The resent command's id.
        command_id: CommandId,
        /// The command.
        command: Outgoing,
        /// How many resends so far.
        resends: u32,
        /// The deadline of the first sending, carried again: past it the participant
        /// refuses the command, so a resend can only learn an outcome, never cause one.
        deadline: Option<DateTime<Utc>>,
        /// When it was resent.
        at: DateTime<Utc>,
    },
    /// A step succeeded.
    StepSucceeded {
        /// Which step.
        step: usize,
    },
    /// A step failed; `retry_at` is set when it will be tried again.
    StepFailed {
        /// Which step.
        step: usize,
        /// The attempt that failed.
        attempt: u32,
        /// Why.
        reason: String,
        /// When the next attempt goes out, if one does.
        retry_at: Option<DateTime<Utc>>,
    },
    /// A compensation succeeded.
    CompensationSucceeded {
        /// The step undone.
        step: usize,
    },
    /// A compensation failed; it is retried at `retry_at`.
    CompensationFailed {
        /// The step being undone.
        step: usize,
        /// The attempt that failed.
        attempt: u32,
        /// Why.
        reason: String,
        /// When it is tried again.
        retry_at: DateTime<Utc>,
    },
    /// Every step succeeded.
    Completed,
    /// A step failed and the completed steps were undone.
    Compensated {
        /// The failure that started the compensation.
        reason: String,
    },
    /// The saga cannot make progress by itself.
    Stuck {
        /// Why.
        reason: String,
    },
    /// An operator resumed a stuck saga.
    Resumed,
    /// An operator gave up on the saga.
    Abandoned {
        /// Why.
        reason: String,
    },
}

impl<I> SagaEvent<I> {
    /// A short description for logs and trails, naming steps by `steps`.
    pub fn describe<S>(&self, steps: &[crate::Step<S>]) -> String {
        // Without the saga's definition (a generic tool), steps are named by number and
        // commands by what they are.
        let name = |i: &usize| {
            steps
                .get(*i)
                .map_or_else(|| format!("step {i}"), |s| s.name.to_owned())
        };
        let sent = |i: &usize, c: &Outgoing| match steps.get(*i) {
            Some(s) => s.name.to_owned(),
            None => format!(
                "step {i} ({} to {}/{})",
                c.command_type, c.aggregate_type, c.aggregate_id
            ),
        };
        match self {
            SagaEvent::Started { .. } => "started".to_owned(),
            SagaEvent::CommandSent {
                step,
                direction: Direction::Forward,
                attempt,
                command,
                ..
            } => format!("{} sent (attempt {attempt})", sent(step, command)),
            SagaEvent::CommandSent {
                step,
                attempt,
                command,
                ..
            } => format!("undo {} sent (attempt {attempt})", sent(step, command)),
            SagaEvent::CommandResent { step, resends, .. } => {
                format!("{} resent ({resends})", name(step))
            }
            SagaEvent::StepSucceeded { step } => format!("{} done", name(step)),
            SagaEvent::StepFailed { step, reason, .. } => {
                format!("{} failed ({reason})", name(step))
            }
            SagaEvent::CompensationSucceeded { step } => format!("{} undone", name(step)),
            SagaEvent::CompensationFailed { step, reason, .. } => {
                format!("undo {} failed ({reason})", name(step))
            }
            SagaEvent::Completed => "completed".to_owned(),
            SagaEvent::Compensated { .. } => "compensated".to_owned(),
            SagaEvent::Stuck { reason } => format!("stuck ({reason})"),
            SagaEvent::Resumed => "resumed".to_owned(),
            SagaEvent::Abandoned { reason } => format!("abandoned ({reason})"),
        }
    }

    /// The command this event sends, if any.
    pub fn outgoing(&self) -> Option<(CommandId, &Outgoing, Option<DateTime<Utc>>)> {
        match self {
            SagaEvent::CommandSent {
                command_id,
                command,
                deadline,
                ..
            } => Some((*command_id, command, *deadline)),
            SagaEvent::CommandResent {
                command_id,
                command,
                deadline,
                ..
            } => Some((*command_id, command, *deadline)),
            _ => None,
        }
    }
}

const EVENT_TYPES: &[EventTypeInfo] = &[
    EventTypeInfo {
        name: "SagaStarted",
        version: 1,
    },
    EventTypeInfo {
        name: "SagaCommandSent",
        version: 1,
    },
    EventTypeInfo {
        name: "SagaCommandResent",
        version: 1,
    },
    EventTypeInfo {
        name: "SagaStepSucceeded",
        version: 1,
    },
    EventTypeInfo {
        name: "SagaStepFailed",
        version: 1,
    },
    EventTypeInfo {
        name: "SagaCompensationSucceeded",
        version: 1,
    },
    EventTypeInfo {
        name: "SagaCompensationFailed",
        version: 1,
    },
    EventTypeInfo {
        name: "SagaCompleted",
        version: 1,
    },
    EventTypeInfo {
        name: "SagaCompensated",
        version: 1,
    },
    EventTypeInfo {
        name: "SagaStuck",
        version: 1,
    },
    EventTypeInfo {
        name: "SagaResumed",
        version: 1,
    },
    EventTypeInfo {
        name: "SagaAbandoned",
        version: 1,
    },
];

fn variant_of(event_type: &str) -> Option<&'static str> {
    Some(match event_type {
        "SagaStarted" => "Started",
        "SagaCommandSent" => "CommandSent",
        "SagaCommandResent" => "CommandResent",
        "SagaStepSucceeded" => "StepSucceeded",
        "SagaStepFailed" => "StepFailed",
        "SagaCompensationSucceeded" => "CompensationSucceeded",
        "SagaCompensationFailed" => "CompensationFailed",
        "SagaCompleted" => "Completed",
        "SagaCompensated" => "Compensated",
        "SagaStuck" => "Stuck",
        "SagaResumed" => "Resumed",
        "SagaAbandoned" => "Abandoned",
        _ => return None,
    })
}

// Saga events are generic over the input, which the derive does not cover for the
// handlers trait; the impl is written once here for every saga.
impl<I> DomainEvent for SagaEvent<I>
where
    I: Serialize + serde::de::DeserializeOwned + Send + Sync + 'static,
{
    const EVENT_TYPES: &'static [EventTypeInfo] = EVENT_TYPES;

    fn event_type(&self) -> &'static str {
        match self {
            SagaEvent::Started { .. } => "SagaStarted",
            SagaEvent::CommandSent { .. } => "SagaCommandSent",
            SagaEvent::CommandResent { .. } => "SagaCommandResent",
            SagaEvent::StepSucceeded { .. } => "SagaStepSucceeded",
            SagaEvent::StepFailed { .. } => "SagaStepFailed",
            SagaEvent::CompensationSucceeded { .. } => "SagaCompensationSucceeded",
            SagaEvent::CompensationFailed { .. } => "SagaCompensationFailed",
            SagaEvent::Completed => "SagaCompleted",
            SagaEvent::Compensated { .. } => "SagaCompensated",
            SagaEvent::Stuck { .. } => "SagaStuck",
            SagaEvent::Resumed => "SagaResumed",
            SagaEvent::Abandoned { .. } => "SagaAbandoned",
        }
    }

    fn schema_version(&self) -> u32 {
        1
    }

    fn to_document(&self) -> Result<serde_json::Value, serde_json::Error> {
        match serde_json::to_value(self)? {
            serde_json::Value::Object(map) if map.len() == 1 => {
                Ok(map.into_iter().next().map(|(_, v)| v).unwrap_or_default())
            }
            // Unit variants serialize as their name: no payload.
            serde_json::Value::String(_) => Ok(serde_json::Value::Null),
            other => Ok(other),
        }
    }

    fn from_document(
        event_type: &str,
        document: serde_json::Value,
    ) -> Option<Result<Self, serde_json::Error>> {
        let variant = variant_of(event_type)?;
        let tagged = if document.is_null() {
            serde_json::Value::String(variant.to_owned())
        } else {
            serde_json::json!({ variant: document })
        };
        Some(serde_json::from_value(tagged))
    }
}

/// The commands a saga instance decides on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(bound = "I: Serialize + serde::de::DeserializeOwned")]
pub enum SagaCommand<I> {
    /// Starts the saga.
    Start {
        /// The saga instance id.
        saga_id: AggregateId,
        /// Its input.
        input: I,
    },
    /// A participant answered one of the saga's commands.
    Reply {
        /// The saga instance id.
        saga_id: AggregateId,
        /// The command answered.
        command_id: CommandId,
        /// The answer.
        outcome: StepOutcome,
    },
    /// Time passed: deadlines and retry timers fire.
    Tick {
        /// The saga instance id.
        saga_id: AggregateId,
    },
    /// An operator resumes a stuck saga.
    Retry {
        /// The saga instance id.
        saga_id: AggregateId,
    },
    /// An operator gives up on a saga.
    Abandon {
        /// The saga instance id.
        saga_id: AggregateId,
        /// Why.
        reason: String,
    },
}

impl<I> Command for SagaCommand<I>
where
    I: Serialize + serde::de::DeserializeOwned + Send + Sync + 'static,
{
    fn aggregate_id(&self) -> AggregateId {
        match self {
            SagaCommand::Start { saga_id, .. }
            | SagaCommand::Reply { saga_id, .. }
            | SagaCommand::Tick { saga_id }
            | SagaCommand::Retry { saga_id }
            | SagaCommand::Abandon { saga_id, .. } => saga_id.clone(),
        }
    }

    fn command_type(&self) -> &'static str {
        match self {
            SagaCommand::Start { .. } => "Start",
            SagaCommand::Reply { .. } => "Reply",
            SagaCommand::Tick { .. } => "Tick",
            SagaCommand::Retry { .. } => "Retry",
            SagaCommand::Abandon { .. } => "Abandon",
        }
    }
}

/// Why a saga command was refused.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, thiserror::Error)]
#[serde(bound = "E: Serialize + serde::de::DeserializeOwned")]
pub enum SagaRejection<E> {
    /// The input is invalid; nothing was started.
    #[error("invalid input: {0}")]
    Invalid(E),
    /// `Start` for an instance that exists.
    #[error("saga already started")]
    AlreadyStarted,
    /// A command for an instance that does not exist.
    #[error("no such saga")]
    NotStarted,
    /// `Retry` of a saga that is not stuck.
    #[error("saga is not stuck (status {0:?})")]
    NotStuck(SagaStatus),
    /// `Abandon` of a saga that already ended.
    #[error("saga already ended (status {0:?})")]
    AlreadyEnded(SagaStatus),
}

/// The command currently out, waiting for its answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InFlight {
    /// Which step.
    pub step: usize,
    /// Performs or undoes it.
    pub direction: Direction,
    /// The attempt.
    pub attempt: u32,
    /// Its id.
    pub command_id: CommandId,
    /// The command.
    pub command: Outgoing,
    /// When it was (re)sent.
    pub sent_at: DateTime<Utc>,
    /// The participant's deadline for it.
    pub deadline: Option<DateTime<Utc>>,
    /// Resends so far.
    pub resends: u32,
}

/// A failed attempt waiting for its retry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PendingRetry {
    /// Which step.
    pub step: usize,
    /// Performs or undoes it.
    pub direction: Direction,
    /// The attempt that will go out.
    pub attempt: u32,
    /// When.
    pub at: DateTime<Utc>,
}

/// The state of one saga instance.
#[derive(Serialize, Deserialize)]
#[serde(bound = "S::Input: Serialize + serde::de::DeserializeOwned")]
pub struct SagaInstance<S: Saga> {
    /// Where it is.
    pub status: SagaStatus,
    /// Its input, once started.
    pub input: Option<S::Input>,
    /// Steps that succeeded, in order.
    pub completed: Vec<usize>,
    /// The command out, if any.
    pub in_flight: Option<InFlight>,
    /// The retry waiting, if any.
    pub retry: Option<PendingRetry>,
    /// Why it is compensating, stuck or abandoned.
    pub reason: Option<String>,
    /// Failed attempts of the current compensation.
    pub compensation_failures: u32,
    /// Forward while running the steps, compensation once undoing them.
    pub phase: Direction,
    /// When the last event was decided (the saga's own clock reading).
    pub updated_at: Option<DateTime<Utc>>,
    #[serde(skip)]
    saga: PhantomData<fn() -> S>,
}

impl<S: Saga> Clone for SagaInstance<S> {
    fn clone(&self) -> Self {
        Self {
            status: self.status,
            input: self.input.clone(),
            completed: self.completed.clone(),
            in_flight: self.in_flight.clone(),
            retry: self.retry.clone(),
            reason: self.reason.clone(),
            compensation_failures: self.compensation_failures,
            phase: self.phase,
            updated_at: self.updated_at,
            saga: PhantomData,
        }
    }
}

impl<S: Saga> std::fmt::Debug for SagaInstance<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SagaInstance")
            .field("saga", &S::NAME)
            .field("status", &self.status)
            .field("input", &self.input)
            .field("completed", &self.completed)
            .field("in_flight", &self.in_flight)
            .field("retry", &self.retry)
            .field("reason", &self.reason)
            .field("phase", &self.phase)
            .finish_non_exhaustive()
    }
}

impl<S: Saga> Default for SagaInstance<S> {
    fn default() -> Self {
        Self {
            status: SagaStatus::New,
            input: None,
            completed: Vec::new(),
            in_flight: None,
            retry: None,
            reason: None,
            compensation_failures: 0,
            phase: Direction::Forward,
            updated_at: None,
            saga: PhantomData,
        }
    }
}

/// The deterministic id of a saga's command: the same saga, step, direction and
/// attempt always give the same id, so participants deduplicate resends.
pub fn step_command_id(
    saga_id: &AggregateId,
    step: usize,
    direction: Direction,
    attempt: u32,
) -> CommandId {
    let dir = match direction {
        Direction::Forward => "do",
        Direction::Compensation => "undo",
    };
    let saga = derived_id(uuid::Uuid::nil(), saga_id.as_str());
    CommandId(derived_id(saga, &format!("{step}/{dir}/{attempt}")))
}
