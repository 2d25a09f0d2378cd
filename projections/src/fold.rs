//! The pure part of running a document projection: decoding a batch and folding it into
//! documents, with the poison policy. Shared by the Postgres and the in-memory runner, so
//! both produce the same documents.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use annals_core::repository::decode_event;
use annals_core::{Envelope, Offset, Partition, Position, RawEnvelope};

use crate::error::ProjectionError;
use crate::projection::{Decoding, DocumentProjection};

/// What to do with an event whose handler keeps failing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PoisonPolicy {
    /// Park it in the dead-letter table, in the transaction that moves the offset past
    /// it; later events with the same key (document id) are parked behind it so their
    /// order is kept, other keys go on. Parked events can be listed, retried and skipped.
    Park,
    /// Stop the projection with [`ProjectionError::PoisonHalted`]; the stored offset
    /// stays at the event. The default: nothing moves past an event nobody looked at.
    #[default]
    Halt,
}

/// How handlers are retried and poison events handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Settings {
    pub(crate) retries: u32,
    pub(crate) backoff: Duration,
    pub(crate) policy: PoisonPolicy,
}

/// One record of a batch, with whether the projection saw it before.
#[derive(Debug, Clone)]
pub(crate) struct Item {
    pub(crate) raw: RawEnvelope,
    pub(crate) replaying: bool,
}

/// An event to park.
#[derive(Debug, Clone)]
pub(crate) struct ParkedEvent {
    pub(crate) raw: RawEnvelope,
    pub(crate) key: String,
    pub(crate) error: String,
    pub(crate) attempts: u32,
    pub(crate) behind: bool,
}

/// What applying a batch did.
#[derive(Debug, Default)]
pub(crate) struct Applied {
    /// How many items were dealt with (applied, ignored or parked). Fewer than the batch
    /// when the projection halts: the items from `consumed` on stay unapplied.
    pub(crate) consumed: usize,
    /// Events parked, in order.
    pub(crate) parked: Vec<ParkedEvent>,
    /// Why the projection halts after the consumed prefix.
    pub(crate) halt: Option<ProjectionError>,
}

/// Where a stored event is; the stores always fill it in.
pub(crate) fn position_of(raw: &RawEnvelope) -> Position {
    raw.position.clone().unwrap_or(Position {
        topic: String::new(),
        partition: Partition(0),
        offset: Offset(0),
    })
}

/// Decodes a batch, stopping at the first event that does not decode: the decoded
/// prefix, and the error that stops the projection after it.
pub(crate) fn decode_batch<E: annals_core::DomainEvent>(
    projection: &'static str,
    items: &[Item],
    decoding: &Decoding,
) -> (Vec<Envelope<E>>, Option<ProjectionError>) {
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        match decode_event::<E>(
            item.raw.clone(),
            decoding.codec.as_ref(),
            &decoding.upcasters,
        ) {
            Ok(event) => out.push(event),
            Err(source) => {
                return (
                    out,
                    Some(ProjectionError::Decode {
                        projection: projection.to_owned(),
                        source: Box::new(source),
                    }),
                );
            }
        }
    }
    (out, None)
}

/// A document as the fold sees it.
#[derive(Debug, Clone)]
pub(crate) struct Slot<D> {
    pub(crate) doc: Option<D>,
    pub(crate) existed: bool,
    pub(crate) changed: bool,
    pub(crate) revision: i64,
}

impl<D> Slot<D> {
    pub(crate) fn loaded(doc: Option<D>, revision: i64) -> Self {
        Self {
            existed: doc.is_some(),
            doc,
            changed: false,
            revision,
        }
    }
}

/// Folds decoded events into their documents. `slots` must hold every document id the
/// events map to (loaded, or empty); `blocked` holds the ids with parked events, and
/// gains the ids of events parked here.
pub(crate) fn fold_documents<P: DocumentProjection>(
    projection: &P,
    items: &[Item],
    events: &[Envelope<P::Event>],
    ids: &[Option<String>],
    slots: &mut HashMap<String, Slot<P::Document>>,
    blocked: &mut HashSet<String>,
    policy: PoisonPolicy,
) -> Applied {
    let mut applied = Applied::default();
    for (i, (event, id)) in events.iter().zip(ids).enumerate() {
        let Some(id) = id else {
            applied.consumed = i + 1;
            continue;
        };
        if blocked.contains(id) {
            applied.parked.push(ParkedEvent {
                raw: items[i].raw.clone(),
                key: id.clone(),
                error: "parked behind an earlier parked event of the same key".to_owned(),
                attempts: 0,
                behind: true,
            });
            applied.consumed = i + 1;
            continue;
        }
        let slot = slots
            .entry(id.clone())
            .or_insert_with(|| Slot::loaded(None, 0));
        let mut candidate = slot.doc.clone();
        match projection.apply(&mut candidate, event) {
            Ok(()) => {
                slot.doc = candidate;
                slot.changed = true;
                slot.revision += 1;
                applied.consumed = i + 1;
            }
            Err(e) => match policy {
                PoisonPolicy::Park => {
                    blocked.insert(id.clone());
                    applied.parked.push(ParkedEvent {
                        raw: items[i].raw.clone(),
                        key: id.clone(),
                        error: error_chain(&e),
                        attempts: 1,
                        behind: false,
                    });
                    applied.consumed = i + 1;
                }
                PoisonPolicy::Halt => {
                    applied.halt = Some(ProjectionError::PoisonHalted {
                        projection: P::NAME.to_owned(),
                        position: position_of(&items[i].raw),
                        key: id.clone(),
                        attempts: 1,
                        source: Box::new(e),
                    });
                    return applied;
                }
            },
        }
    }
    applied
}

/// An error with its causes, `a: b: c`, for storing as text.
pub(crate) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
