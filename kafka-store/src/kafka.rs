//! Small helpers over rdkafka: error classification and timeouts.

use annals_core::Error;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};

/// Whether an error means another writer took over this transactional id. Any of the
/// forms brokers and librdkafka use for it counts.
pub(crate) fn is_fenced(error: &KafkaError) -> bool {
    matches!(
        error.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::ProducerFenced
                | RDKafkaErrorCode::Fenced
                | RDKafkaErrorCode::InvalidProducerEpoch
                | RDKafkaErrorCode::InvalidProducerIdMapping
        )
    )
}

/// A backend error with context.
pub(crate) fn backend(context: impl Into<String>, error: KafkaError) -> Error {
    Error::backend(context, error)
}
