//! Small helpers over rdkafka: error classification and timeouts.

use annals_core::Error;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};

/// Whether an error means another writer took over this transactional id. Any of the
/// forms brokers and librdkafka use for it counts.
pub(crate) fn is_fenced(error: &KafkaError) -> bool {
    error.rdkafka_error_code().is_some_and(is_fenced_code)
}

/// [`is_fenced`] for a bare error code (a client's fatal error, say).
pub(crate) fn is_fenced_code(code: RDKafkaErrorCode) -> bool {
    matches!(
        code,
        RDKafkaErrorCode::ProducerFenced
            | RDKafkaErrorCode::Fenced
            | RDKafkaErrorCode::InvalidProducerEpoch
            | RDKafkaErrorCode::InvalidProducerIdMapping
    )
}

/// A copy of `error` for one more receiver (one failure answering a batch of requests).
/// The cases callers act on keep their variant; the rest become a backend error with the
/// full text, causes included.
pub(crate) fn duplicate(error: &Error) -> Error {
    match error {
        Error::Conflict {
            aggregate,
            expected,
            actual,
        } => Error::Conflict {
            aggregate: aggregate.clone(),
            expected: *expected,
            actual: *actual,
        },
        Error::MalformedRecord { position, reason } => Error::MalformedRecord {
            position: position.clone(),
            reason: reason.clone(),
        },
        Error::SequenceGap { at, expected } => Error::SequenceGap {
            at: at.clone(),
            expected: *expected,
        },
        Error::HashChain { at, kind } => Error::HashChain {
            at: at.clone(),
            kind: *kind,
        },
        Error::InvalidRequest { aggregate, reason } => Error::InvalidRequest {
            aggregate: aggregate.clone(),
            reason: reason.clone(),
        },
        Error::Timeout { operation, after } => Error::Timeout {
            operation: operation.clone(),
            after: *after,
        },
        Error::NotOwner { topic, partition } => Error::NotOwner {
            topic: topic.clone(),
            partition: *partition,
        },
        other => {
            let mut text = other.to_string();
            let mut source = std::error::Error::source(other);
            while let Some(s) = source {
                text.push_str(&format!(": {s}"));
                source = s.source();
            }
            Error::backend("the writer failed", text)
        }
    }
}

/// A backend error with context.
pub(crate) fn backend(context: impl Into<String>, error: KafkaError) -> Error {
    Error::backend(context, error)
}
