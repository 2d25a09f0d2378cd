//! Looking at a cluster the way operators need: which annals topics exist, how many
//! partitions they have, how far each partition reaches.

use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};

use crate::error::KafkaStoreError;
use crate::options::KafkaStoreOptions;
use crate::reader::partition_i32;

/// One topic of the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicInfo {
    /// The topic's name.
    pub name: String,
    /// Its partition count.
    pub partitions: u32,
}

fn client(options: &KafkaStoreOptions) -> Result<BaseConsumer, KafkaStoreError> {
    options
        .reader_config()
        .create()
        .map_err(|e| KafkaStoreError::kafka("creating a client", e))
}

/// Every topic of the cluster, sorted by name (blocking).
pub fn list_topics(options: &KafkaStoreOptions) -> Result<Vec<TopicInfo>, KafkaStoreError> {
    let metadata = client(options)?
        .fetch_metadata(None, options.operation_timeout)
        .map_err(|e| {
            KafkaStoreError::kafka(format!("brokers `{}` do not answer", options.brokers), e)
        })?;
    let mut topics: Vec<TopicInfo> = metadata
        .topics()
        .iter()
        .filter(|t| t.error().is_none() && !t.name().starts_with("__"))
        .map(|t| TopicInfo {
            name: t.name().to_owned(),
            partitions: u32::try_from(t.partitions().len()).unwrap_or(u32::MAX),
        })
        .collect();
    topics.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(topics)
}

/// The high watermark (offset after the last record) of each partition of `topic`
/// (blocking).
///
/// Brokers report it with Kafka's semantics; a broker that miscounts it (see
/// docs/kafka-brokers.md) makes lag figures approximate, never the data.
pub fn partition_ends(
    options: &KafkaStoreOptions,
    topic: &str,
    partitions: u32,
) -> Result<Vec<u64>, KafkaStoreError> {
    let consumer = client(options)?;
    (0..partitions)
        .map(|p| {
            consumer
                .fetch_watermarks(topic, partition_i32(p), options.operation_timeout)
                .map(|(_, high)| u64::try_from(high).unwrap_or(0))
                .map_err(|e| KafkaStoreError::kafka(format!("reading the end of {topic}/{p}"), e))
        })
        .collect()
}

/// Checks that the brokers answer, within `timeout` (blocking).
pub fn ping(options: &KafkaStoreOptions, timeout: Duration) -> Result<(), KafkaStoreError> {
    client(options)?
        .fetch_metadata(None, timeout)
        .map(|_| ())
        .map_err(|e| {
            KafkaStoreError::kafka(format!("brokers `{}` do not answer", options.brokers), e)
        })
}
