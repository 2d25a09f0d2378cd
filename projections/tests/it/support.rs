//! Finding the services and isolating tests: a database and topic prefix of their own.

use std::sync::Arc;
use std::time::Duration;

use annals_core::repository::encode_event;
use annals_core::{
    Actor, AggregateId, AggregateRef, CommandId, EventId, EventStore, ExpectedVersion, JsonCodec,
    Metadata, RawEnvelope,
};
use annals_kafka_store::{KafkaEventStore, KafkaStoreOptions};
use annals_projections::Database;
use sqlx::Connection;

use crate::model::CounterEvent;

/// The brokers under test. Without `KAFKA_BROKERS` the test fails with instructions; a
/// local run that opted out with `ANNALS_SKIP_SERVICES=1` skips loudly (never in CI).
pub(crate) fn brokers() -> Option<String> {
    match std::env::var("KAFKA_BROKERS") {
        Ok(b) if !b.trim().is_empty() => Some(b),
        _ if skip_allowed() => {
            eprintln!("SKIPPED: KAFKA_BROKERS is not set (ANNALS_SKIP_SERVICES=1)");
            None
        }
        _ => panic!(
            "KAFKA_BROKERS is not set: start a broker with `bash scripts/kafka-dev.sh start` \
             and export the KAFKA_BROKERS line it prints, or run `bash scripts/test.sh`"
        ),
    }
}

fn skip_allowed() -> bool {
    std::env::var("ANNALS_SKIP_SERVICES").as_deref() == Ok("1") && std::env::var("CI").is_err()
}

/// The server every test database is created on: `ANNALS_TEST_POSTGRES` or
/// `postgres://postgres@127.0.0.1:5432`, without a database name.
fn server_url() -> String {
    std::env::var("ANNALS_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".to_owned())
}

/// A database of this test's own, dropped when the value is (even after a panic).
pub(crate) struct TestDb {
    pub(crate) db: Database,
    name: String,
}

impl TestDb {
    pub(crate) async fn create() -> Option<Self> {
        let server = server_url();
        let mut admin = match sqlx::PgConnection::connect(&format!("{server}/postgres")).await {
            Ok(c) => c,
            Err(e) if skip_allowed() => {
                eprintln!("SKIPPED: Postgres at {server} is not reachable: {e}");
                return None;
            }
            Err(e) => panic!(
                "Postgres at {server} is not reachable ({e}): start it (`pg_ctlcluster 15 main \
                 start`, or `docker compose up -d postgres`) or point ANNALS_TEST_POSTGRES at \
                 a server that trusts user postgres"
            ),
        };
        let name = format!("annals_t_{}", uuid::Uuid::now_v7().simple());
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .await
            .expect("creating the test database");
        let _ = admin.close().await;
        let db = Database::connect(&format!("{server}/{name}"))
            .await
            .expect("connecting to the test database");
        Some(Self { db, name })
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        let server = server_url();
        // Drop runs outside async context; a thread with its own runtime can wait.
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async {
                if let Ok(mut admin) =
                    sqlx::PgConnection::connect(&format!("{server}/postgres")).await
                {
                    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .execute(&mut admin)
                        .await;
                }
            });
        })
        .join();
    }
}

/// Options with a topic prefix and app id no other test uses, and fast rebalances.
pub(crate) fn isolated_options(brokers: &str) -> KafkaStoreOptions {
    let unique = uuid::Uuid::now_v7().simple().to_string();
    KafkaStoreOptions::new(brokers)
        .topic_prefix(format!("p{unique}"))
        .app_id(format!("app{unique}"))
        .partitions(3)
        .session_timeout(Duration::from_secs(2))
        .operation_timeout(Duration::from_secs(20))
}

/// Everything a Kafka + Postgres test needs.
pub(crate) struct Env {
    pub(crate) test_db: TestDb,
    pub(crate) kafka: KafkaStoreOptions,
    pub(crate) store: Arc<KafkaEventStore>,
}

impl Env {
    pub(crate) async fn new() -> Option<Self> {
        let brokers = brokers()?;
        let test_db = TestDb::create().await?;
        let kafka = isolated_options(&brokers);
        let store = Arc::new(
            KafkaEventStore::connect(kafka.clone())
                .await
                .expect("the broker answers"),
        );
        Some(Self {
            test_db,
            kafka,
            store,
        })
    }

    pub(crate) fn db(&self) -> &Database {
        &self.test_db.db
    }
}

/// Appends `adds` to counter `id` in one append (one Kafka transaction); returns the
/// stored events.
pub(crate) async fn add(store: &KafkaEventStore, id: &str, adds: &[u32]) -> Vec<RawEnvelope> {
    let aggregate = AggregateRef::new("counter", AggregateId::new(id));
    let metadata = Metadata::new(Actor::new("user:test"), CommandId(uuid::Uuid::now_v7()));
    let events = adds
        .iter()
        .map(|by| {
            encode_event(
                &CounterEvent::Added { by: *by },
                &aggregate,
                &JsonCodec,
                EventId(uuid::Uuid::now_v7()),
                chrono::Utc::now(),
                &metadata,
            )
            .expect("encodes")
        })
        .collect();
    store
        .append(
            "counter",
            &AggregateId::new(id),
            ExpectedVersion::Any,
            events,
        )
        .await
        .expect("appends")
}

/// Writes `per_id` events to each of `ids`, `chunk` per append, appends of different ids
/// concurrently.
pub(crate) async fn write_many(
    store: &KafkaEventStore,
    ids: &[String],
    per_id: u32,
    chunk: u32,
) -> Vec<RawEnvelope> {
    let writes = ids.iter().map(|id| async move {
        let mut out = Vec::new();
        let mut i = 0;
        while i < per_id {
            let n = chunk.min(per_id - i);
            let adds: Vec<u32> = (i..i + n).map(|k| k % 7 + 1).collect();
            out.extend(add(store, id, &adds).await);
            i += n;
        }
        out
    });
    futures::future::join_all(writes)
        .await
        .into_iter()
        .flatten()
        .collect()
}

/// Polls `check` until it holds or `timeout` passes; for conditions that live in the
/// database, where no event tells when they become true.
pub(crate) async fn eventually<F, Fut>(timeout: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Whether a projector's committed offsets are past every event of `written`: it has
/// applied them (or seen another runner apply them).
pub(crate) fn covers(progress: &annals_projections::Progress, written: &[RawEnvelope]) -> bool {
    written.iter().filter_map(|e| e.position.as_ref()).all(|p| {
        progress
            .partitions
            .get(&(p.topic.clone(), p.partition.0))
            .is_some_and(|at| at.next_offset > p.offset.0)
    })
}
