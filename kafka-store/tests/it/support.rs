//! Finding the broker and isolating tests from each other.

use annals_kafka_store::{KafkaEventStore, KafkaStoreOptions};

/// The brokers under test. Without `KAFKA_BROKERS` the test fails with instructions; the
/// only exception is a local run that opted out with `ANNALS_SKIP_SERVICES=1`, which
/// skips loudly. CI never sets it.
pub(crate) fn brokers() -> Option<String> {
    match std::env::var("KAFKA_BROKERS") {
        Ok(b) if !b.trim().is_empty() => Some(b),
        _ if std::env::var("ANNALS_SKIP_SERVICES").as_deref() == Ok("1")
            && std::env::var("CI").is_err() =>
        {
            eprintln!("SKIPPED: KAFKA_BROKERS is not set (ANNALS_SKIP_SERVICES=1)");
            None
        }
        _ => panic!(
            "KAFKA_BROKERS is not set: start a broker with `bash scripts/kafka-dev.sh start` \
             and export the KAFKA_BROKERS line it prints, or run `bash scripts/test.sh`"
        ),
    }
}

/// Options with a topic prefix and app id no other test uses.
pub(crate) fn isolated_options(brokers: &str) -> KafkaStoreOptions {
    let unique = uuid::Uuid::now_v7().simple().to_string();
    KafkaStoreOptions::new(brokers)
        .topic_prefix(format!("t{unique}"))
        .app_id(format!("app{unique}"))
        .partitions(3)
        .operation_timeout(std::time::Duration::from_secs(20))
}

/// A store on fresh topics.
pub(crate) async fn fresh_store() -> Option<KafkaEventStore> {
    let brokers = brokers()?;
    Some(
        KafkaEventStore::connect(isolated_options(&brokers))
            .await
            .expect("the broker answers"),
    )
}
