//! Services for the tests: the broker, isolated topics, waiting on conditions.

use std::future::Future;
use std::time::Duration;

use annals_kafka_store::KafkaStoreOptions;

/// The brokers under test; without `KAFKA_BROKERS` the test fails with instructions
/// (a local run may opt out with `ANNALS_SKIP_SERVICES=1`; CI never does).
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

/// A topic prefix no other test uses.
pub(crate) fn unique_prefix() -> String {
    let id = uuid::Uuid::now_v7().simple().to_string();
    format!("bank-t{}", &id[16..])
}

/// Options on fresh topics: 3 partitions, fast rebalances.
pub(crate) fn options(brokers: &str, prefix: &str) -> KafkaStoreOptions {
    KafkaStoreOptions::new(brokers)
        .topic_prefix(prefix)
        .app_id(prefix)
        .partitions(3)
        .session_timeout(Duration::from_secs(2))
        .operation_timeout(Duration::from_secs(20))
        .command_timeout(Duration::from_secs(20))
}

/// Polls `check` every 50 ms until it returns `Some`, or panics after `timeout` with
/// `what`.
pub(crate) async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Starts the account and transfer services in this process and waits until each owns
/// every partition.
pub(crate) async fn start_services(
    options: &KafkaStoreOptions,
) -> (
    annals_kafka_store::ProcessorHandle,
    annals_kafka_store::ProcessorHandle,
) {
    let accounts = bank::services::accounts(options).await.expect("accounts");
    let transfers = bank::services::transfers(options).await.expect("transfers");
    bank::services::wait_live(&accounts, "account")
        .await
        .expect("live");
    bank::services::wait_live(&transfers, "transfer")
        .await
        .expect("live");
    (accounts, transfers)
}
