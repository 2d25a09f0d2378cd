//! The transfer sagas' read model: one document per transfer with its state, folded from
//! the saga's own events (its audit trail) by a document projection.

use annals_core::Envelope;
use annals_projections::DocumentProjection;
use annals_saga::{Saga as _, SagaEvent, SagaStatus};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::domain::{Transfer, TransferRequest};

/// A transfer as the read model shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TransferDocument {
    /// Where the saga is.
    pub status: SagaStatus,
    /// What was asked.
    pub request: Option<TransferRequest>,
    /// Why it was compensated, is stuck or was abandoned.
    pub reason: Option<String>,
    /// The last thing that happened, readable.
    pub last_step: String,
    /// How many events the saga has recorded.
    pub events: u64,
    /// When the last one happened.
    pub updated_at: DateTime<Utc>,
    /// Whether it has started undoing steps.
    pub compensating: bool,
}

/// Projects transfer sagas into `transfer_sagas.documents`.
#[derive(Debug, Clone, Copy, Default)]
pub struct TransferSagas;

impl DocumentProjection for TransferSagas {
    const NAME: &'static str = "transfer_sagas";
    const AGGREGATES: &'static [&'static str] = &["transfer"];
    type Event = SagaEvent<TransferRequest>;
    type Document = TransferDocument;
    type Error = std::convert::Infallible;

    fn document_id(&self, event: &Envelope<Self::Event>) -> Option<String> {
        Some(event.aggregate_id.to_string())
    }

    fn apply(
        &self,
        document: &mut Option<TransferDocument>,
        event: &Envelope<Self::Event>,
    ) -> Result<(), Self::Error> {
        let doc = document.get_or_insert_with(|| TransferDocument {
            status: SagaStatus::New,
            request: None,
            reason: None,
            last_step: String::new(),
            events: 0,
            updated_at: event.occurred_at,
            compensating: false,
        });
        doc.events = event.sequence.0;
        doc.updated_at = event.occurred_at;
        doc.last_step = event.payload.describe(Transfer::steps());
        match &event.payload {
            SagaEvent::Started { input } => {
                doc.status = SagaStatus::Running;
                doc.request = Some(input.clone());
            }
            SagaEvent::StepFailed {
                reason,
                retry_at: None,
                ..
            } => {
                doc.status = SagaStatus::Compensating;
                doc.compensating = true;
                doc.reason = Some(reason.clone());
            }
            SagaEvent::Completed => doc.status = SagaStatus::Completed,
            SagaEvent::Compensated { .. } => doc.status = SagaStatus::Compensated,
            SagaEvent::Stuck { reason } => {
                doc.status = SagaStatus::Stuck;
                doc.reason = Some(reason.clone());
            }
            SagaEvent::Resumed => {
                doc.status = if doc.compensating {
                    SagaStatus::Compensating
                } else {
                    SagaStatus::Running
                };
            }
            SagaEvent::Abandoned { reason } => {
                doc.status = SagaStatus::Abandoned;
                doc.reason = Some(reason.clone());
            }
            _ => {}
        }
        Ok(())
    }
}
