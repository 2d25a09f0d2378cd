//! The envelope: one event with everything stored around it.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::hash::EventHash;
use crate::ids::{AggregateId, AggregateRef, EventId, Position, Version};
use crate::metadata::Metadata;

/// One event with its identity, place in its stream, metadata and hash-chain fields.
///
/// `P` is the payload: a typed event (`Envelope<AccountEvent>`) after decoding, or the
/// stored bytes ([`RawEnvelope`]) as the stores hold them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope<P> {
    /// Unique id of this event (UUID v7).
    pub event_id: EventId,
    /// The aggregate type the stream belongs to.
    pub aggregate_type: String,
    /// The aggregate instance.
    pub aggregate_id: AggregateId,
    /// Per-aggregate sequence: 1 for the first event, no gaps.
    pub sequence: Version,
    /// The stable event type name.
    pub event_type: String,
    /// The schema version the payload was written with (before any upcasting, for raw
    /// envelopes; the current version, for decoded ones).
    pub schema_version: u32,
    /// When the event was recorded, to the microsecond.
    pub occurred_at: DateTime<Utc>,
    /// Who, why, which request.
    pub metadata: Metadata,
    /// Where the event is stored; `None` until it is.
    pub position: Option<Position>,
    /// Hash of the previous event of this aggregate (zeros for sequence 1).
    pub prev_hash: EventHash,
    /// Hash of this event over its canonical encoding (see [`crate::hash`]).
    pub hash: EventHash,
    /// The event itself.
    pub payload: P,
}

impl<P> Envelope<P> {
    /// The aggregate this event belongs to.
    pub fn aggregate(&self) -> AggregateRef {
        AggregateRef::new(self.aggregate_type.clone(), self.aggregate_id.clone())
    }

    /// The same envelope with another payload.
    pub fn map<Q>(self, f: impl FnOnce(P) -> Q) -> Envelope<Q> {
        Envelope {
            event_id: self.event_id,
            aggregate_type: self.aggregate_type,
            aggregate_id: self.aggregate_id,
            sequence: self.sequence,
            event_type: self.event_type,
            schema_version: self.schema_version,
            occurred_at: self.occurred_at,
            metadata: self.metadata,
            position: self.position,
            prev_hash: self.prev_hash,
            hash: self.hash,
            payload: f(self.payload),
        }
    }
}

/// An encoded payload and how it was encoded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RawPayload {
    /// The codec's content type (`application/json`).
    pub content_type: String,
    /// The stored bytes.
    pub bytes: Vec<u8>,
}

/// An envelope as stored: the payload still encoded.
pub type RawEnvelope = Envelope<RawPayload>;

/// An event on its way to a store: encoded, but without sequence, hashes or position,
/// which the store's single writer assigns.
#[derive(Debug, Clone, PartialEq)]
pub struct UncommittedEvent {
    /// Unique id of the event.
    pub event_id: EventId,
    /// The stable event type name.
    pub event_type: String,
    /// The schema version of the payload.
    pub schema_version: u32,
    /// When the event was recorded, to the microsecond.
    pub occurred_at: DateTime<Utc>,
    /// Who, why, which request.
    pub metadata: Metadata,
    /// The encoded event.
    pub payload: RawPayload,
}

impl UncommittedEvent {
    /// Seals the event as the next of its stream: assigns the sequence, links it to the
    /// previous hash and computes its own.
    pub fn seal(
        self,
        aggregate: &AggregateRef,
        sequence: Version,
        prev_hash: EventHash,
    ) -> RawEnvelope {
        let mut envelope = Envelope {
            event_id: self.event_id,
            aggregate_type: aggregate.aggregate_type.clone(),
            aggregate_id: aggregate.aggregate_id.clone(),
            sequence,
            event_type: self.event_type,
            schema_version: self.schema_version,
            // The wire format carries microseconds; sealing at that precision makes the
            // returned envelope equal to the one read back.
            occurred_at: crate::clock::truncate_to_micros(self.occurred_at),
            metadata: self.metadata,
            position: None,
            prev_hash,
            hash: EventHash::ZERO,
            payload: self.payload,
        };
        envelope.hash = EventHash::of(&envelope);
        envelope
    }
}
