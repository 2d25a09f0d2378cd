//! Creating and verifying the topics of an aggregate type.

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::types::RDKafkaErrorCode;

use crate::error::KafkaStoreError;
use crate::options::KafkaStoreOptions;

/// What a topic is for, which decides its configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopicKind {
    /// Events: the source of truth. Never deleted, never compacted.
    Events,
    /// Commands waiting for their processor.
    Commands,
    /// Outcomes of commands, read by the callers.
    Replies,
    /// Latest state per aggregate; compacted.
    Snapshots,
}

impl TopicKind {
    fn config(self) -> &'static [(&'static str, &'static str)] {
        match self {
            TopicKind::Events => &[("cleanup.policy", "delete"), ("retention.ms", "-1")],
            TopicKind::Commands => &[("cleanup.policy", "delete"), ("retention.ms", "604800000")],
            TopicKind::Replies => &[("cleanup.policy", "delete"), ("retention.ms", "86400000")],
            TopicKind::Snapshots => &[("cleanup.policy", "compact")],
        }
    }
}

/// Creates `topic` if it does not exist, verifies an event topic's retention and cleanup
/// policy, and returns its partition count.
pub async fn ensure_topic(
    options: &KafkaStoreOptions,
    topic: &str,
    kind: TopicKind,
) -> Result<u32, KafkaStoreError> {
    let admin: AdminClient<DefaultClientContext> = options
        .client_config()
        .create()
        .map_err(|e| KafkaStoreError::kafka("creating an admin client", e))?;
    let admin_options = AdminOptions::new().operation_timeout(Some(options.operation_timeout));
    let partitions = i32::try_from(options.partitions).unwrap_or(i32::MAX);
    let new = NewTopic {
        name: topic,
        num_partitions: partitions,
        replication: TopicReplication::Fixed(options.replication_factor),
        config: kind.config().to_vec(),
    };
    let results = admin
        .create_topics([&new], &admin_options)
        .await
        .map_err(|e| KafkaStoreError::kafka(format!("creating topic `{topic}`"), e))?;
    for result in results {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => {
                return Err(KafkaStoreError::Topic {
                    topic: name,
                    reason: format!("cannot be created: {code}"),
                });
            }
        }
    }
    if kind == TopicKind::Events {
        verify_event_topic(&admin, &admin_options, options, topic).await?;
    }
    partition_count(options, topic).await
}

async fn verify_event_topic(
    admin: &AdminClient<DefaultClientContext>,
    admin_options: &AdminOptions,
    options: &KafkaStoreOptions,
    topic: &str,
) -> Result<(), KafkaStoreError> {
    let described = admin
        .describe_configs([&ResourceSpecifier::Topic(topic)], admin_options)
        .await
        .map_err(|e| KafkaStoreError::kafka(format!("describing topic `{topic}`"), e))?;
    for resource in described {
        let resource = resource.map_err(|code| KafkaStoreError::Topic {
            topic: topic.to_owned(),
            reason: format!("cannot be described: {code}"),
        })?;
        if let Some(policy) = resource.get("cleanup.policy").and_then(|e| e.value.clone())
            && policy.contains("compact")
        {
            return Err(KafkaStoreError::Compacted {
                topic: topic.to_owned(),
                policy,
            });
        }
        if let Some(retention) = resource.get("retention.ms").and_then(|e| e.value.clone())
            && retention != "-1"
            && !options.allow_finite_retention
        {
            return Err(KafkaStoreError::FiniteRetention {
                topic: topic.to_owned(),
                retention_ms: retention,
            });
        }
        let missing: Vec<&str> = ["cleanup.policy", "retention.ms"]
            .into_iter()
            .filter(|key| resource.get(key).and_then(|e| e.value.as_ref()).is_none())
            .collect();
        if !missing.is_empty() && !options.allow_unverified_topic_config {
            return Err(KafkaStoreError::UnverifiedTopic {
                topic: topic.to_owned(),
                missing: missing.join(" and "),
            });
        }
    }
    Ok(())
}

/// The partition count of an existing topic, from the cluster's metadata.
pub async fn partition_count(
    options: &KafkaStoreOptions,
    topic: &str,
) -> Result<u32, KafkaStoreError> {
    let options = options.clone();
    let topic = topic.to_owned();
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = options
            .reader_config()
            .create()
            .map_err(|e| KafkaStoreError::kafka("creating a metadata client", e))?;
        let deadline = std::time::Instant::now() + options.operation_timeout;
        loop {
            let metadata = consumer
                .fetch_metadata(Some(&topic), options.operation_timeout)
                .map_err(|e| {
                    KafkaStoreError::kafka(format!("fetching metadata of `{topic}`"), e)
                })?;
            let count = metadata
                .topics()
                .iter()
                .find(|t| t.name() == topic && t.error().is_none())
                .map(|t| t.partitions().len())
                .unwrap_or(0);
            if count > 0 {
                return Ok(u32::try_from(count).unwrap_or(u32::MAX));
            }
            if std::time::Instant::now() > deadline {
                return Err(KafkaStoreError::Topic {
                    topic: topic.clone(),
                    reason: "has no partitions in the cluster metadata".to_owned(),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    })
    .await
    .map_err(|e| KafkaStoreError::Config {
        key: "runtime".to_owned(),
        reason: format!("metadata task failed: {e}"),
    })?
}
