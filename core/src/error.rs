//! The errors of the event store and of command execution.

use std::fmt;

use crate::codec::CodecError;
use crate::envelope::RawEnvelope;
use crate::hash::EventHash;
use crate::ids::{AggregateRef, Position, Version};
use crate::store::ExpectedVersion;

/// Where in which stream a read problem was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// The aggregate whose stream it is.
    pub aggregate: AggregateRef,
    /// The sequence of the offending event.
    pub sequence: Version,
    /// Where the offending event is stored, when known.
    pub position: Option<Position>,
}

impl Location {
    /// The location of a stored event.
    pub fn of(event: &RawEnvelope) -> Box<Self> {
        Box::new(Self {
            aggregate: event.aggregate(),
            sequence: event.sequence,
            position: event.position.clone(),
        })
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} sequence {}", self.aggregate, self.sequence)?;
        if let Some(p) = &self.position {
            write!(f, " (at {p})")?;
        }
        Ok(())
    }
}

/// How a hash chain is broken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChainBreak {
    /// The event's content no longer matches its own hash: it was changed after writing.
    ContentChanged {
        /// The hash stored with the event.
        stored: EventHash,
        /// The hash of the content as read.
        computed: EventHash,
    },
    /// The event does not link to its predecessor: an event was dropped, reordered or
    /// replaced before it.
    LinkBroken {
        /// The hash of the previous event as read.
        expected_prev: EventHash,
        /// The previous hash this event carries.
        stored_prev: EventHash,
    },
}

impl fmt::Display for ChainBreak {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChainBreak::ContentChanged { stored, computed } => write!(
                f,
                "content changed after it was written (stored hash {stored}, content hashes to {computed})"
            ),
            ChainBreak::LinkBroken {
                expected_prev,
                stored_prev,
            } => write!(
                f,
                "does not follow its predecessor (predecessor hash {expected_prev}, event links to {stored_prev})"
            ),
        }
    }
}

/// Everything that can go wrong storing, reading or decoding events.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The stream is not at the expected version: another command changed it first.
    #[error("version conflict on {aggregate}: expected {expected}, actual version {actual}")]
    Conflict {
        /// The aggregate written to.
        aggregate: AggregateRef,
        /// What the writer expected.
        expected: ExpectedVersion,
        /// The stream's actual version.
        actual: Version,
    },
    /// A stored event's type, or its schema version, is unknown and no upcaster leads from
    /// it to a known one.
    #[error(
        "unknown event type `{event_type}` version {schema_version} at {at}: no such event and no upcaster for it"
    )]
    UnknownEventType {
        /// Where the event is.
        at: Box<Location>,
        /// Its type name.
        event_type: String,
        /// Its schema version.
        schema_version: u32,
    },
    /// A stored payload does not decode.
    #[error("corrupt payload of `{event_type}` at {at}")]
    CorruptPayload {
        /// Where the event is.
        at: Box<Location>,
        /// Its type name.
        event_type: String,
        /// What the codec said.
        #[source]
        source: CodecError,
    },
    /// An upcaster failed on a stored payload.
    #[error("upcasting `{event_type}` from version {from_version} failed at {at}: {reason}")]
    Upcast {
        /// Where the event is.
        at: Box<Location>,
        /// Its type name.
        event_type: String,
        /// The version the upcaster started from.
        from_version: u32,
        /// What went wrong.
        reason: String,
    },
    /// A stored record is not an annals event: a header is missing or malformed.
    #[error("malformed record at {position}: {reason}")]
    MalformedRecord {
        /// Where the record is.
        position: Position,
        /// What is wrong with it.
        reason: String,
    },
    /// Sequences of an aggregate are not consecutive: an event is missing or doubled.
    #[error("sequence gap at {at}: expected sequence {expected}")]
    SequenceGap {
        /// The event that came instead.
        at: Box<Location>,
        /// The sequence that should have come.
        expected: Version,
    },
    /// The hash chain of an aggregate is broken: an event was changed, dropped or
    /// reordered.
    #[error("hash chain broken at {at}: {kind}")]
    HashChain {
        /// The first event that does not verify.
        at: Box<Location>,
        /// How it fails.
        kind: ChainBreak,
    },
    /// An event could not be encoded for storage.
    #[error("cannot encode event `{event_type}` for {aggregate}")]
    Encode {
        /// The aggregate.
        aggregate: AggregateRef,
        /// The event type.
        event_type: String,
        /// What the codec said.
        #[source]
        source: CodecError,
    },
    /// The request is invalid before it reaches storage (empty aggregate id, no events,
    /// unknown aggregate type, oversized payload ...).
    #[error("invalid request for {aggregate}: {reason}")]
    InvalidRequest {
        /// The aggregate concerned.
        aggregate: AggregateRef,
        /// What is wrong.
        reason: String,
    },
    /// The command arrived after its deadline (see [`crate::Metadata::DEADLINE`]); it
    /// took no effect.
    #[error("command to {aggregate} arrived after its deadline {deadline}")]
    DeadlinePassed {
        /// The aggregate addressed.
        aggregate: AggregateRef,
        /// The deadline it carried.
        deadline: chrono::DateTime<chrono::Utc>,
    },
    /// The store did not answer in time. The operation may or may not have taken effect;
    /// retrying with the same command id is safe where commands are deduplicated.
    #[error("{operation} timed out after {after:?}")]
    Timeout {
        /// What was attempted.
        operation: String,
        /// How long it waited.
        after: std::time::Duration,
    },
    /// This process no longer owns the partition (another writer fenced it). Nothing
    /// more is written from here; the command should be sent to the new owner.
    #[error("lost ownership of {topic} partition {partition}")]
    NotOwner {
        /// The topic.
        topic: String,
        /// The partition.
        partition: u32,
    },
    /// The storage backend failed.
    #[error("event store backend failed: {context}")]
    Backend {
        /// What the store was doing.
        context: String,
        /// The backend's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl Error {
    /// Wraps a backend error with what the store was doing.
    pub fn backend(
        context: impl Into<String>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        Error::Backend {
            context: context.into(),
            source: source.into(),
        }
    }
}

/// Why a command did not produce events: the domain said no, or the infrastructure failed.
#[derive(Debug, thiserror::Error)]
pub enum CommandError<R> {
    /// The aggregate refused the command; nothing was written.
    #[error("command rejected")]
    Rejected(#[source] R),
    /// Storing or loading failed (conflicts, timeouts, corrupt streams ...).
    #[error(transparent)]
    Store(#[from] Error),
}

impl<R> CommandError<R> {
    /// The rejection, if the domain refused.
    pub fn rejection(&self) -> Option<&R> {
        match self {
            CommandError::Rejected(r) => Some(r),
            CommandError::Store(_) => None,
        }
    }
}
