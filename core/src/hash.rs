//! The per-aggregate hash chain that makes tampering visible.
//!
//! Every event stores the SHA-256 of its predecessor (`prev_hash`, 32 zero bytes for
//! sequence 1) and its own hash over this canonical encoding, version 1:
//!
//! ```text
//! str("annals-event-v1")
//! prev_hash            32 bytes
//! event_id             16 bytes (UUID, big-endian as written)
//! str(aggregate_type)  str(aggregate_id)
//! sequence             u64 big-endian
//! str(event_type)      schema_version u32 big-endian
//! occurred_at          i64 big-endian, microseconds since 1970-01-01T00:00:00Z
//! str(actor)           command_id, correlation_id, causation_id: 16 bytes each
//! trace_context        u8 0 (absent) | u8 1 then str(traceparent)
//! extensions           u32 big-endian count, then str(key) str(value), keys ascending
//! str(content_type)    bytes(payload)
//! ```
//!
//! `str(s)` and `bytes(b)` are a u32 big-endian length followed by the UTF-8 bytes or the
//! raw bytes. The hash covers the stored payload bytes, so an encrypted field is hashed as
//! ciphertext and forgetting its key never breaks the chain.

use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::envelope::RawEnvelope;
use crate::error::{ChainBreak, Error, Location};
use crate::ids::Version;

/// A SHA-256 hash in the event chain.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct EventHash(pub [u8; 32]);

impl EventHash {
    /// The `prev_hash` of an aggregate's first event.
    pub const ZERO: EventHash = EventHash([0; 32]);

    /// The hash of a stored event over its canonical encoding (ignores `hash` itself and
    /// the position).
    pub fn of(event: &RawEnvelope) -> EventHash {
        let mut h = Hasher(Sha256::new());
        h.str("annals-event-v1");
        h.raw(&event.prev_hash.0);
        h.raw(event.event_id.0.as_bytes());
        h.str(&event.aggregate_type);
        h.str(event.aggregate_id.as_str());
        h.raw(&event.sequence.0.to_be_bytes());
        h.str(&event.event_type);
        h.raw(&event.schema_version.to_be_bytes());
        h.raw(&event.occurred_at.timestamp_micros().to_be_bytes());
        let m = &event.metadata;
        h.str(m.actor.as_str());
        h.raw(m.command_id.0.as_bytes());
        h.raw(m.correlation_id.0.as_bytes());
        h.raw(m.causation_id.0.as_bytes());
        match &m.trace_context {
            None => h.raw(&[0]),
            Some(t) => {
                h.raw(&[1]);
                h.str(t);
            }
        }
        h.len(m.extensions.len());
        for (k, v) in &m.extensions {
            h.str(k);
            h.str(v);
        }
        h.str(&event.payload.content_type);
        h.bytes(&event.payload.bytes);
        EventHash(h.0.finalize().into())
    }

    /// Lowercase hex, as written in Kafka headers.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Parses 64 hex digits.
    pub fn from_hex(s: &str) -> Option<EventHash> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).ok()?;
        Some(EventHash(out))
    }
}

impl fmt::Debug for EventHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EventHash({})", self.to_hex())
    }
}

impl fmt::Display for EventHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl Serialize for EventHash {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for EventHash {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        EventHash::from_hex(&s).ok_or_else(|| serde::de::Error::custom("expected 64 hex digits"))
    }
}

struct Hasher(Sha256);

impl Hasher {
    fn raw(&mut self, b: &[u8]) {
        self.0.update(b);
    }
    fn len(&mut self, n: usize) {
        // Lengths above u32::MAX cannot occur: Kafka records are far smaller.
        let n = u32::try_from(n).unwrap_or(u32::MAX);
        self.0.update(n.to_be_bytes());
    }
    fn bytes(&mut self, b: &[u8]) {
        self.len(b.len());
        self.0.update(b);
    }
    fn str(&mut self, s: &str) {
        self.bytes(s.as_bytes());
    }
}

/// Checks one aggregate's events as they are read: consecutive sequences, each linked to
/// its predecessor's hash, each hash matching its content.
#[derive(Debug, Clone, Default)]
pub struct ChainVerifier {
    last: Option<(Version, EventHash)>,
}

impl ChainVerifier {
    /// A verifier for a stream read from its first event.
    pub fn from_start() -> Self {
        Self {
            last: Some((Version::INITIAL, EventHash::ZERO)),
        }
    }

    /// A verifier for a stream read from somewhere in the middle: the first event seen is
    /// taken as the anchor (its own hash is still checked).
    pub fn anchored_at_first_seen() -> Self {
        Self { last: None }
    }

    /// A verifier that continues after a known event.
    pub fn after(sequence: Version, hash: EventHash) -> Self {
        Self {
            last: Some((sequence, hash)),
        }
    }

    /// The last verified event's sequence and hash.
    pub fn last(&self) -> Option<(Version, EventHash)> {
        self.last
    }

    /// Verifies the next event of the stream.
    pub fn verify(&mut self, event: &RawEnvelope) -> Result<(), Error> {
        let location = || Location::of(event);
        let actual = EventHash::of(event);
        if actual != event.hash {
            return Err(Error::HashChain {
                at: location(),
                kind: ChainBreak::ContentChanged {
                    stored: event.hash,
                    computed: actual,
                },
            });
        }
        if let Some((last_seq, last_hash)) = self.last {
            let expected = last_seq.next();
            if event.sequence != expected {
                return Err(Error::SequenceGap {
                    at: location(),
                    expected,
                });
            }
            if event.prev_hash != last_hash {
                return Err(Error::HashChain {
                    at: location(),
                    kind: ChainBreak::LinkBroken {
                        expected_prev: last_hash,
                        stored_prev: event.prev_hash,
                    },
                });
            }
        } else if event.sequence == Version::INITIAL {
            return Err(Error::SequenceGap {
                at: location(),
                expected: Version(1),
            });
        }
        self.last = Some((event.sequence, event.hash));
        Ok(())
    }
}
