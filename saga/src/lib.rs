//! Sagas for **annals**: long-running transactions across aggregates and services.
//!
//! A [`Saga`] lists typed steps; each sends a command to some aggregate and may have a
//! compensation that undoes it, a retry policy for transient failures and a deadline. A
//! running saga is a [`SagaInstance`], an ordinary event-sourced aggregate whose events
//! (`SagaStarted`, `SagaCommandSent`, `SagaStepSucceeded`, `SagaCompensated` ...) are its
//! durable progress and its audit trail. Deciding is pure, like every aggregate; the
//! Kafka runtime records a saga event and sends the command it implies in one
//! transaction.
//!
//! Guarantees:
//! - command ids are deterministic per (saga, step, direction, attempt), so participants
//!   deduplicate resends;
//! - a transient failure (a conflict) is retried with backoff before compensation
//!   starts; a refusal starts compensation at once;
//! - compensations run in reverse order of the completed steps and are retried; after
//!   [`instance::COMPENSATION_ATTEMPTS_BEFORE_STUCK`] failures the saga is parked as
//!   stuck, visible and resumable, never dropped;
//! - a step's command carries its deadline; participants refuse it afterwards, so when
//!   the deadline passes the saga resends the same command id and learns for certain
//!   whether the step happened before it compensates. Money never moves twice.

pub mod decide;
pub mod definition;
pub mod instance;
#[cfg(feature = "kafka")]
pub mod kafka;
pub mod runner;

pub use definition::{BuildError, CommandFn, Outgoing, RetryPolicy, Saga, Step};
pub use instance::{
    Direction, SagaCommand, SagaEvent, SagaInstance, SagaRejection, SagaStatus, StepOutcome,
    step_command_id,
};
pub use runner::{Participant, SagaRunner};
