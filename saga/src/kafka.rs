//! Sagas on Kafka: the reactions that let the command processor run a
//! [`SagaInstance`] across processes with exactly-once steps.
//!
//! ```no_run
//! # async fn demo<S: annals_saga::Saga>() -> Result<(), annals_kafka_store::KafkaStoreError> {
//! use std::sync::Arc;
//! use annals_kafka_store::{CommandProcessor, KafkaStoreOptions};
//! use annals_saga::kafka::SagaReactions;
//! use annals_saga::SagaInstance;
//! let options = KafkaStoreOptions::new("127.0.0.1:9092");
//! let orchestrator = CommandProcessor::<SagaInstance<S>>::new(options)
//!     .with_reactions(Arc::new(SagaReactions::<S>::new()))
//!     .start()
//!     .await?;
//! # Ok(()) }
//! ```

use std::collections::BTreeSet;
use std::marker::PhantomData;

use annals_core::{Actor, AggregateId, CausationId, CommandId, Envelope};
use annals_kafka_store::command::protocol::Outcome;
use annals_kafka_store::command::reactions::{Outbound, Reactions};
use chrono::{DateTime, Utc};

use crate::definition::Saga;
use crate::instance::{SagaCommand, SagaEvent, SagaInstance, StepOutcome};

/// The reactions of saga `S`.
pub struct SagaReactions<S> {
    saga: PhantomData<fn() -> S>,
}

impl<S> Default for SagaReactions<S> {
    fn default() -> Self {
        Self { saga: PhantomData }
    }
}

impl<S: Saga> SagaReactions<S> {
    /// The reactions of saga `S`.
    pub fn new() -> Self {
        Self::default()
    }
}

/// How a participant's answer reads to a saga.
pub fn step_outcome(outcome: &Outcome) -> StepOutcome {
    match outcome {
        Outcome::Committed { .. } => StepOutcome::Done,
        Outcome::Rejected { rejection } => StepOutcome::Refused {
            // A unit rejection is a bare string (`"Frozen"`); anything else stays JSON.
            reason: match rejection {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            },
        },
        Outcome::Conflict { expected, actual } => StepOutcome::Retryable {
            reason: format!("version conflict: expected {expected}, actual {actual}"),
        },
        Outcome::Failed { reason } => StepOutcome::Refused {
            reason: reason.clone(),
        },
    }
}

impl<S: Saga> Reactions<SagaInstance<S>> for SagaReactions<S> {
    fn targets(&self) -> Vec<String> {
        let targets: BTreeSet<&str> = S::participants().iter().copied().collect();
        targets.into_iter().map(str::to_owned).collect()
    }

    fn outbox(&self, event: &Envelope<SagaEvent<S::Input>>) -> Vec<Outbound> {
        let Some((command_id, command, deadline)) = event.payload.outgoing() else {
            return Vec::new();
        };
        let mut metadata = event
            .metadata
            .caused_by(command_id, CausationId(event.event_id.0));
        metadata.actor = Actor::new(format!("saga:{}", S::NAME));
        if let Some(deadline) = deadline {
            metadata = metadata.with_deadline(deadline);
        }
        vec![Outbound {
            aggregate_type: command.aggregate_type.clone(),
            aggregate_id: command.aggregate_id.clone(),
            command: command.command.clone(),
            metadata,
        }]
    }

    fn on_reply(
        &self,
        aggregate_id: &AggregateId,
        command_id: CommandId,
        outcome: &Outcome,
    ) -> Option<SagaCommand<S::Input>> {
        Some(SagaCommand::Reply {
            saga_id: aggregate_id.clone(),
            command_id,
            outcome: step_outcome(outcome),
        })
    }

    fn wake_at(&self, state: &SagaInstance<S>) -> Option<DateTime<Utc>> {
        state.wake_at()
    }

    fn tick(&self, aggregate_id: &AggregateId) -> SagaCommand<S::Input> {
        SagaCommand::Tick {
            saga_id: aggregate_id.clone(),
        }
    }
}
