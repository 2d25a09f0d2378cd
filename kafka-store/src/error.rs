//! Errors of setting up and running the Kafka store. Errors of individual store
//! operations are `annals_core::Error`, with these as their source where Kafka is at fault.

use rdkafka::error::KafkaError;

/// What went wrong setting up or running the Kafka store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KafkaStoreError {
    /// An event topic deletes old records: it would lose the source of truth.
    #[error(
        "event topic `{topic}` has retention.ms={retention_ms}: old events would be deleted; set retention.ms=-1 or opt in with allow_finite_retention(true)"
    )]
    FiniteRetention {
        /// The topic.
        topic: String,
        /// Its retention.
        retention_ms: String,
    },
    /// An event topic is compacted: compaction deletes all but the last event per key.
    #[error("event topic `{topic}` has cleanup.policy={policy}: compaction would delete events")]
    Compacted {
        /// The topic.
        topic: String,
        /// Its cleanup policy.
        policy: String,
    },
    /// The broker does not report an event topic's retention or cleanup policy, so the
    /// store cannot tell whether the topic keeps its events.
    #[error(
        "event topic `{topic}`: the broker does not report {missing}, so the store cannot verify that the topic keeps its events; set them on the topic (cleanup.policy=delete, retention.ms=-1) or opt in with allow_unverified_topic_config(true)"
    )]
    UnverifiedTopic {
        /// The topic.
        topic: String,
        /// The settings the broker did not report.
        missing: String,
    },
    /// A topic could not be created or described.
    #[error("topic `{topic}`: {reason}")]
    Topic {
        /// The topic.
        topic: String,
        /// What the broker said.
        reason: String,
    },
    /// A setting is invalid.
    #[error("invalid configuration `{key}`: {reason}")]
    Config {
        /// The setting.
        key: String,
        /// Why.
        reason: String,
    },
    /// A Kafka client call failed.
    #[error("{context}")]
    Kafka {
        /// What was being done.
        context: String,
        /// The client's error.
        #[source]
        source: KafkaError,
    },
    /// A store operation failed.
    #[error(transparent)]
    Store(#[from] annals_core::Error),
}

impl KafkaStoreError {
    pub(crate) fn kafka(context: impl Into<String>, source: KafkaError) -> Self {
        Self::Kafka {
            context: context.into(),
            source,
        }
    }
}

impl From<KafkaStoreError> for annals_core::Error {
    fn from(e: KafkaStoreError) -> Self {
        match e {
            KafkaStoreError::Store(inner) => inner,
            other => annals_core::Error::backend("kafka store", other),
        }
    }
}
