//! A small aggregate and the projections the tests run over it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use annals_core::{Aggregate, Command, CommandContext, DomainEvent, Envelope};
use annals_projections::{Context, DocumentProjection, SqlProjection};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use sqlx::{Postgres, Transaction};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, DomainEvent)]
pub(crate) enum CounterEvent {
    #[event(name = "CounterAdded", version = 1)]
    Added { by: u32 },
}

#[derive(Debug, Clone, Serialize, Deserialize, Command)]
pub(crate) enum CounterCommand {
    Add {
        #[aggregate_id]
        id: String,
        by: u32,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub(crate) enum CounterRejection {
    #[error("adding zero changes nothing")]
    Zero,
}

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
            CounterCommand::Add { by: 0, .. } => Err(CounterRejection::Zero),
            CounterCommand::Add { by, .. } => Ok(vec![CounterEvent::Added { by: *by }]),
        }
    }

    fn apply(&mut self, event: &CounterEvent) {
        let CounterEvent::Added { by } = event;
        self.total += u64::from(*by);
    }
}

/// The read-model document: a counter's total, and the sequence of the last event in
/// it, which makes the fold check that no event is lost or applied twice.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Tally {
    pub total: u64,
    pub events: u64,
    pub last_sequence: u64,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum TallyError {
    #[error("event {got} of {id} does not follow event {last}: lost or applied twice")]
    OutOfOrder { id: String, last: u64, got: u64 },
    #[error("13 is unlucky")]
    Unlucky,
}

/// Totals by counter, `factor` times the amounts. While `broken`, an add of 13 fails.
#[derive(Debug, Clone)]
pub(crate) struct Totals {
    pub factor: u64,
    pub broken: Arc<AtomicBool>,
}

impl Totals {
    pub(crate) fn new() -> Self {
        Self {
            factor: 1,
            broken: Arc::new(AtomicBool::new(false)),
        }
    }
}

impl DocumentProjection for Totals {
    const NAME: &'static str = "totals";
    const AGGREGATES: &'static [&'static str] = &["counter"];
    type Event = CounterEvent;
    type Document = Tally;
    type Error = TallyError;

    fn document_id(&self, event: &Envelope<CounterEvent>) -> Option<String> {
        Some(event.aggregate_id.to_string())
    }

    fn apply(
        &self,
        doc: &mut Option<Tally>,
        event: &Envelope<CounterEvent>,
    ) -> Result<(), TallyError> {
        let CounterEvent::Added { by } = event.payload;
        if by == 13 && self.broken.load(Ordering::SeqCst) {
            return Err(TallyError::Unlucky);
        }
        let tally = doc.get_or_insert_with(Tally::default);
        if event.sequence.0 != tally.last_sequence + 1 {
            return Err(TallyError::OutOfOrder {
                id: event.aggregate_id.to_string(),
                last: tally.last_sequence,
                got: event.sequence.0,
            });
        }
        tally.total += u64::from(by) * self.factor;
        tally.events += 1;
        tally.last_sequence = event.sequence.0;
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum LedgerError {
    #[error("ledger statement failed")]
    Db(#[from] sqlx::Error),
    #[error("13 is unlucky")]
    Unlucky,
}

/// One row per event (primary key = position). `strict`: a second insert of a position
/// fails (so a double application halts the projection); otherwise it is ignored, which
/// makes the handler idempotent for replays. Counts handler calls by replay flag.
#[derive(Debug, Clone, Default)]
pub(crate) struct Ledger {
    pub strict: bool,
    pub broken: Arc<AtomicBool>,
    pub side_effects: Arc<AtomicU64>,
    pub replayed: Arc<AtomicU64>,
}

#[async_trait]
impl SqlProjection for Ledger {
    const NAME: &'static str = "ledger";
    const AGGREGATES: &'static [&'static str] = &["counter"];
    type Event = CounterEvent;
    type Error = LedgerError;

    async fn setup(&self, tx: &mut Transaction<'_, Postgres>) -> Result<(), LedgerError> {
        sqlx::query(
            "CREATE TABLE entries (
                 topic text NOT NULL, partition int NOT NULL, \"offset\" bigint NOT NULL,
                 aggregate_id text NOT NULL, sequence bigint NOT NULL, amount bigint NOT NULL,
                 PRIMARY KEY (topic, partition, \"offset\"))",
        )
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    async fn handle(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        event: &Envelope<CounterEvent>,
        ctx: &Context,
    ) -> Result<(), LedgerError> {
        let CounterEvent::Added { by } = event.payload;
        if by == 13 && self.broken.load(Ordering::SeqCst) {
            return Err(LedgerError::Unlucky);
        }
        let position = event
            .position
            .clone()
            .expect("stored events have positions");
        let conflict = if self.strict {
            ""
        } else {
            "ON CONFLICT DO NOTHING"
        };
        sqlx::query(&format!(
            "INSERT INTO entries (topic, partition, \"offset\", aggregate_id, sequence, amount)
             VALUES ($1, $2, $3, $4, $5, $6) {conflict}"
        ))
        .bind(&position.topic)
        .bind(i32::try_from(position.partition.0).expect("small"))
        .bind(i64::try_from(position.offset.0).expect("small"))
        .bind(event.aggregate_id.as_str())
        .bind(i64::try_from(event.sequence.0).expect("small"))
        .bind(i64::from(by))
        .execute(&mut **tx)
        .await?;
        if ctx.is_replaying() {
            self.replayed.fetch_add(1, Ordering::SeqCst);
        } else {
            self.side_effects.fetch_add(1, Ordering::SeqCst);
        }
        Ok(())
    }
}

/// What `Totals` must hold after `events`, folded independently of the projection.
pub(crate) fn expected_totals(
    events: &[annals_core::RawEnvelope],
    factor: u64,
) -> std::collections::BTreeMap<String, Tally> {
    let mut by_id: std::collections::BTreeMap<String, Vec<&annals_core::RawEnvelope>> =
        std::collections::BTreeMap::new();
    for e in events {
        by_id.entry(e.aggregate_id.to_string()).or_default().push(e);
    }
    by_id
        .into_iter()
        .map(|(id, mut evs)| {
            evs.sort_by_key(|e| e.sequence);
            let mut tally = Tally::default();
            for e in evs {
                let doc: serde_json::Value =
                    serde_json::from_slice(&e.payload.bytes).expect("json");
                let by = doc["by"].as_u64().expect("by");
                tally.total += by * factor;
                tally.events += 1;
                tally.last_sequence = e.sequence.0;
            }
            (id, tally)
        })
        .collect()
}
