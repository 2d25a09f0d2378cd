//! Running sagas in process, over any `EventStore`: the zero-setup demo and tests. The
//! Kafka runtime (`annals-kafka-store`) gives the same saga exactly-once steps across
//! processes.

use std::collections::HashMap;
use std::sync::Arc;

use annals_core::{
    Actor, Aggregate, AggregateId, AggregateRepository, CausationId, CommandError, CommandId,
    Envelope, Error, Metadata,
};
use async_trait::async_trait;

use crate::definition::{Outgoing, Saga};
use crate::instance::{SagaCommand, SagaEvent, SagaInstance, SagaRejection, StepOutcome};

/// Something a saga sends commands to.
#[async_trait]
pub trait Participant: Send + Sync {
    /// Handles one command. `None` when the outcome is unknown (the saga will resend the
    /// same command id after the step's deadline).
    async fn handle(&self, command: &Outgoing, metadata: Metadata) -> Option<StepOutcome>;
}

/// What a store error means for a saga step.
pub fn classify<R: std::fmt::Display>(result: Result<(), CommandError<R>>) -> Option<StepOutcome> {
    match result {
        Ok(()) => Some(StepOutcome::Done),
        Err(CommandError::Rejected(r)) => Some(StepOutcome::Refused {
            reason: r.to_string(),
        }),
        Err(CommandError::Store(Error::Conflict { .. })) => Some(StepOutcome::Retryable {
            reason: "version conflict".to_owned(),
        }),
        Err(CommandError::Store(
            e @ (Error::DeadlinePassed { .. } | Error::InvalidRequest { .. }),
        )) => Some(StepOutcome::Refused {
            reason: e.to_string(),
        }),
        // Timeouts and backend failures: the command may or may not have taken effect.
        Err(CommandError::Store(_)) => None,
    }
}

#[async_trait]
impl<A: Aggregate> Participant for AggregateRepository<A> {
    async fn handle(&self, command: &Outgoing, metadata: Metadata) -> Option<StepOutcome> {
        let typed: A::Command = match serde_json::from_value(command.command.clone()) {
            Ok(c) => c,
            Err(e) => {
                return Some(StepOutcome::Refused {
                    reason: format!("malformed {} command: {e}", A::TYPE),
                });
            }
        };
        classify(self.execute(typed, metadata).await.map(|_| ()))
    }
}

/// Drives saga instances in process: records each step on the saga's own stream, hands
/// the command to its participant and feeds the answer back, until the saga waits or
/// ends.
pub struct SagaRunner<S: Saga> {
    sagas: AggregateRepository<SagaInstance<S>>,
    participants: HashMap<String, Arc<dyn Participant>>,
}

/// A saga command's error.
pub type SagaError<S> = CommandError<SagaRejection<<S as Saga>::Invalid>>;

impl<S: Saga> SagaRunner<S> {
    /// A runner storing saga instances in `sagas`.
    pub fn new(sagas: AggregateRepository<SagaInstance<S>>) -> Self {
        Self {
            sagas,
            participants: HashMap::new(),
        }
    }

    /// Routes commands for `aggregate_type` to `participant`.
    #[must_use]
    pub fn with_participant(
        mut self,
        aggregate_type: &str,
        participant: Arc<dyn Participant>,
    ) -> Self {
        self.participants
            .insert(aggregate_type.to_owned(), participant);
        self
    }

    /// The saga instances' repository.
    pub fn sagas(&self) -> &AggregateRepository<SagaInstance<S>> {
        &self.sagas
    }

    /// Starts a saga and drives it as far as it goes; returns its state then.
    pub async fn start(
        &self,
        saga_id: AggregateId,
        input: S::Input,
        metadata: Metadata,
    ) -> Result<SagaInstance<S>, SagaError<S>> {
        self.run(
            SagaCommand::Start {
                saga_id: saga_id.clone(),
                input,
            },
            metadata,
        )
        .await
    }

    /// Lets time pass for one saga (deadlines, retries) and drives it on.
    pub async fn tick(&self, saga_id: AggregateId) -> Result<SagaInstance<S>, SagaError<S>> {
        let metadata = Metadata::new(Actor::system(), CommandId(uuid::Uuid::now_v7()));
        self.run(SagaCommand::Tick { saga_id }, metadata).await
    }

    /// Sends an operator command (`Retry`, `Abandon`) and drives the saga on.
    pub async fn operate(
        &self,
        command: SagaCommand<S::Input>,
        metadata: Metadata,
    ) -> Result<SagaInstance<S>, SagaError<S>> {
        self.run(command, metadata).await
    }

    async fn run(
        &self,
        command: SagaCommand<S::Input>,
        metadata: Metadata,
    ) -> Result<SagaInstance<S>, SagaError<S>> {
        let saga_id = annals_core::Command::aggregate_id(&command);
        let mut queue: Vec<Envelope<SagaEvent<S::Input>>> =
            self.sagas.execute(command, metadata).await?.events;
        while let Some(event) = (!queue.is_empty()).then(|| queue.remove(0)) {
            let Some((command_id, outgoing, deadline)) = event.payload.outgoing() else {
                continue;
            };
            let participant = self.participants.get(&outgoing.aggregate_type);

            let mut meta = event
                .metadata
                .caused_by(command_id, CausationId(event.event_id.0));
            meta.actor = Actor::new(format!("saga:{}", S::NAME));
            if let Some(deadline) = deadline {
                meta = meta.with_deadline(deadline);
            }
            let outcome = match participant {
                Some(p) => p.handle(outgoing, meta).await,
                // Never handed to anyone, so it certainly took no effect.
                None => Some(StepOutcome::Refused {
                    reason: format!(
                        "no participant handles `{}` in this runner",
                        outgoing.aggregate_type
                    ),
                }),
            };
            let Some(outcome) = outcome else {
                continue;
            };
            let reply = SagaCommand::Reply {
                saga_id: saga_id.clone(),
                command_id,
                outcome,
            };
            let reply_meta = event
                .metadata
                .caused_by(CommandId(uuid::Uuid::now_v7()), CausationId(command_id.0));
            queue.extend(self.sagas.execute(reply, reply_meta).await?.events);
        }
        Ok(self.sagas.load(&saga_id).await?.state)
    }
}
