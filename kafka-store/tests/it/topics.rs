//! Event topics that would lose events are refused: finite retention (unless allowed),
//! compaction (always), and, on brokers that do not report a topic's settings, a topic
//! whose settings cannot be verified (unless allowed). Topics the store creates verify.

use std::time::Duration;

use annals_core::{AggregateId, Error, EventStore, ExpectedVersion};
use annals_kafka_store::{CommandProcessor, KafkaEventStore, KafkaStoreError, KafkaStoreOptions};
use rdkafka::admin::{AdminClient, AdminOptions, ResourceSpecifier};
use rdkafka::client::DefaultClientContext;

use crate::harness::{added, create_topic, fault_options, meta, raw_config};
use crate::model::Counter;
use crate::support::brokers;

const T: &str = "counter";

/// Options on fresh topics, with the event topic created beforehand by a raw admin
/// client with exactly `config`.
async fn with_existing_topic(brokers: &str, config: &[(&str, &str)]) -> KafkaStoreOptions {
    let options = fault_options(brokers).operation_timeout(Duration::from_secs(10));
    create_topic(brokers, &options.events_topic(T), 3, config).await;
    options
}

async fn ensure(options: &KafkaStoreOptions) -> Result<u32, KafkaStoreError> {
    KafkaEventStore::connect(options.clone())
        .await
        .expect("store connects")
        .ensure_aggregate(T)
        .await
}

/// The settings the broker reports for a topic (all of them on Apache Kafka; only
/// those set at creation on Tansu).
async fn reported(brokers: &str, topic: &str) -> Vec<(String, Option<String>)> {
    let admin: AdminClient<DefaultClientContext> =
        raw_config(brokers).create().expect("admin client");
    let described = admin
        .describe_configs([&ResourceSpecifier::Topic(topic)], &AdminOptions::new())
        .await
        .expect("describe_configs answers");
    described
        .into_iter()
        .flat_map(|r| r.expect("described").entries)
        .map(|e| (e.name, e.value))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_topic_with_finite_retention_is_refused_unless_allowed() {
    let Some(brokers) = brokers() else { return };
    let options = with_existing_topic(
        &brokers,
        &[("cleanup.policy", "delete"), ("retention.ms", "1000")],
    )
    .await;
    let topic = options.events_topic(T);
    let err = ensure(&options).await.expect_err("finite retention");
    assert!(
        matches!(&err, KafkaStoreError::FiniteRetention { topic: t, retention_ms } if *t == topic && retention_ms == "1000"),
        "{err:?}"
    );
    // Every entry point refuses it: appends ...
    let store = KafkaEventStore::connect(options.clone())
        .await
        .expect("store");
    let append = store
        .append(
            T,
            &AggregateId::new("c-1"),
            ExpectedVersion::Any,
            vec![added("c-1", 1, 1, &meta())],
        )
        .await
        .expect_err("appends are refused");
    assert!(
        matches!(&append, Error::Backend { source, .. } if source.to_string().contains("retention.ms=1000")),
        "{append:?}"
    );
    // ... and processors.
    let processor = CommandProcessor::<Counter>::new(options.clone())
        .start()
        .await;
    assert!(
        matches!(processor, Err(KafkaStoreError::FiniteRetention { .. })),
        "{processor:?}"
    );

    let allowed = options.allow_finite_retention(true);
    assert_eq!(ensure(&allowed).await.expect("allowed explicitly"), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compacted_event_topic_is_refused_even_with_finite_retention_allowed() {
    let Some(brokers) = brokers() else { return };
    let options = with_existing_topic(
        &brokers,
        &[("cleanup.policy", "compact"), ("retention.ms", "-1")],
    )
    .await
    .allow_finite_retention(true)
    .allow_unverified_topic_config(true);
    let topic = options.events_topic(T);
    let err = ensure(&options).await.expect_err("compacted");
    assert!(
        matches!(&err, KafkaStoreError::Compacted { topic: t, policy } if *t == topic && policy.contains("compact")),
        "{err:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_topic_whose_settings_are_not_reported_is_refused_unless_allowed() {
    let Some(brokers) = brokers() else { return };
    // Created without settings, as an operator's tool or broker auto-creation would.
    let options = with_existing_topic(&brokers, &[]).await;
    let topic = options.events_topic(T);
    let settings = reported(&brokers, &topic).await;
    let reports_defaults = settings.iter().any(|(k, _)| k == "retention.ms");
    println!(
        "*** the broker reports {} settings for a topic created without any ({})",
        settings.len(),
        if reports_defaults {
            "defaults included: Apache Kafka semantics"
        } else {
            "none: Tansu quirk, the store cannot verify it"
        }
    );
    let err = ensure(&options)
        .await
        .expect_err("cannot be shown to keep events");
    if reports_defaults {
        // Apache Kafka's default retention is 7 days.
        assert!(
            matches!(err, KafkaStoreError::FiniteRetention { .. }),
            "{err:?}"
        );
    } else {
        assert!(
            matches!(&err, KafkaStoreError::UnverifiedTopic { topic: t, missing } if *t == topic && missing.contains("retention.ms")),
            "{err:?}"
        );
        println!("refused: {err}");
    }
    let allowed = options
        .allow_unverified_topic_config(true)
        .allow_finite_retention(true);
    assert_eq!(ensure(&allowed).await.expect("allowed explicitly"), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_topics_the_store_creates_keep_events_forever_and_verify() {
    let Some(brokers) = brokers() else { return };
    let options = fault_options(&brokers);
    assert_eq!(ensure(&options).await.expect("created and verified"), 3);
    let settings = reported(&brokers, &options.events_topic(T)).await;
    let get = |key: &str| {
        settings
            .iter()
            .find(|(k, _)| k == key)
            .and_then(|(_, v)| v.clone())
    };
    assert_eq!(get("cleanup.policy").as_deref(), Some("delete"));
    assert_eq!(get("retention.ms").as_deref(), Some("-1"));
    // Verifying again (a second process) accepts it.
    assert_eq!(ensure(&options).await.expect("verifies"), 3);
}
