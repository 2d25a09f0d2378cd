//! Rebuild rate of a document projection next to the raw rates of its two halves, in the
//! same run: consuming the topic (a subscription that only counts) and bulk-upserting
//! the same documents into Postgres (the runner's statement, without Kafka).
//!
//! Needs `KAFKA_BROKERS` and Postgres (`ANNALS_TEST_POSTGRES`, default
//! `postgres://postgres@127.0.0.1:5432`); `ANNALS_BENCH_EVENTS` events (default 100000).
//! Run: `cargo bench -p annals-projections --bench rebuild`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use annals_core::repository::encode_event;
use annals_core::{
    Actor, AggregateId, AggregateRef, CommandId, DomainEvent, Envelope, EventId, EventStore,
    ExpectedVersion, JsonCodec, Metadata, Offset,
};
use annals_kafka_store::subscription::{
    AssignmentListener, Delivery, Subscription, TopicPartition,
};
use annals_kafka_store::{KafkaEventStore, KafkaStoreOptions};
use annals_projections::{
    Database, DocumentProjection, Projection, Projector, ProjectorOptions, ops,
};
use serde::{Deserialize, Serialize};
use sqlx::Connection;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, DomainEvent)]
enum BenchEvent {
    #[event(name = "Added", version = 1)]
    Added { by: u32 },
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Tally {
    total: u64,
    events: u64,
}

struct Totals;

impl DocumentProjection for Totals {
    const NAME: &'static str = "bench_totals";
    const AGGREGATES: &'static [&'static str] = &["counter"];
    type Event = BenchEvent;
    type Document = Tally;
    type Error = std::convert::Infallible;

    fn document_id(&self, event: &Envelope<BenchEvent>) -> Option<String> {
        Some(event.aggregate_id.to_string())
    }

    fn apply(
        &self,
        doc: &mut Option<Tally>,
        event: &Envelope<BenchEvent>,
    ) -> Result<(), Self::Error> {
        let BenchEvent::Added { by } = event.payload;
        let tally = doc.get_or_insert_with(Tally::default);
        tally.total += u64::from(by);
        tally.events += 1;
        Ok(())
    }
}

struct FromStart;

impl AssignmentListener for FromStart {
    fn assigned(&self, partitions: &[TopicPartition]) -> Result<Vec<Offset>, annals_core::Error> {
        Ok(vec![Offset(0); partitions.len()])
    }
    fn revoked(&self, _: &[TopicPartition]) {}
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let Ok(brokers) = std::env::var("KAFKA_BROKERS") else {
        eprintln!("skipped: set KAFKA_BROKERS (bash scripts/kafka-dev.sh start)");
        return Ok(());
    };
    let events: u64 = std::env::var("ANNALS_BENCH_EVENTS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(100_000);
    let server = std::env::var("ANNALS_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".to_owned());
    let unique = uuid::Uuid::now_v7().simple().to_string();
    let kafka = KafkaStoreOptions::new(brokers)
        .topic_prefix(format!("bench{unique}"))
        .app_id(format!("bench{unique}"))
        .partitions(4)
        .session_timeout(Duration::from_secs(2));
    let store = Arc::new(KafkaEventStore::connect(kafka.clone()).await?);

    // Write: 1000 counters, 100 events per append.
    let started = Instant::now();
    let ids: Vec<String> = (0..1000).map(|i| format!("c-{i}")).collect();
    let per_id = events.div_ceil(1000);
    let mut written = 0u64;
    for chunk in ids.chunks(50) {
        let appends = chunk.iter().map(|id| {
            let store = store.clone();
            async move {
                let aggregate = AggregateRef::new("counter", AggregateId::new(id.as_str()));
                let metadata = Metadata::new(Actor::new("bench"), CommandId(uuid::Uuid::now_v7()));
                let mut done = 0;
                while done < per_id {
                    let n = (per_id - done).min(100);
                    let batch = (0..n)
                        .map(|k| {
                            encode_event(
                                &BenchEvent::Added {
                                    by: u32::try_from(k % 9 + 1).unwrap_or(1),
                                },
                                &aggregate,
                                &JsonCodec,
                                EventId(uuid::Uuid::now_v7()),
                                chrono::Utc::now(),
                                &metadata,
                            )
                        })
                        .collect::<Result<Vec<_>, _>>()?;
                    store
                        .append(
                            "counter",
                            &aggregate.aggregate_id,
                            ExpectedVersion::Any,
                            batch,
                        )
                        .await?;
                    done += n;
                }
                anyhow::Ok(done)
            }
        });
        for n in futures::future::try_join_all(appends).await? {
            written += n;
        }
    }
    println!("wrote {written} events in {:.1?}", started.elapsed());

    // Raw consume.
    let topic = kafka.events_topic("counter");
    let mut subscription = Subscription::start(
        &kafka,
        &format!("raw{unique}"),
        &topic,
        Arc::new(FromStart),
        500,
    )?;
    let started = Instant::now();
    let (mut consumed, mut caught_up) = (0u64, std::collections::HashSet::new());
    while caught_up.len() < 4 || consumed < written {
        match subscription.next().await {
            Some(Delivery::Events(batch)) => consumed += batch.len() as u64,
            Some(Delivery::CaughtUp(tp)) => {
                caught_up.insert(tp.partition);
            }
            other => anyhow::bail!("unexpected delivery {other:?}"),
        }
    }
    let consume = started.elapsed();
    subscription.stop().await;

    // Raw bulk upsert: the runner's statement, 500 events' documents at a time.
    let name = format!("annals_bench_{unique}");
    let mut admin = sqlx::PgConnection::connect(&format!("{server}/postgres")).await?;
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut admin)
        .await?;
    let db = Database::connect(&format!("{server}/{name}")).await?;
    sqlx::query("CREATE TABLE raw_documents (id text PRIMARY KEY, doc jsonb NOT NULL, revision bigint NOT NULL, updated_at timestamptz NOT NULL DEFAULT now())")
        .execute(db.pool())
        .await?;
    let started = Instant::now();
    let mut state: HashMap<String, (Tally, i64)> = HashMap::new();
    let mut upserted = 0u64;
    while upserted < written {
        let mut touched = Vec::new();
        for k in 0..500u64.min(written - upserted) {
            let id = &ids[usize::try_from((upserted + k) % 1000).unwrap_or(0)];
            let entry = state.entry(id.clone()).or_default();
            entry.0.total += (upserted + k) % 9 + 1;
            entry.0.events += 1;
            entry.1 += 1;
            touched.push(id.clone());
        }
        touched.sort_unstable();
        touched.dedup();
        let docs: Vec<serde_json::Value> = touched
            .iter()
            .map(|id| serde_json::to_value(&state[id].0))
            .collect::<Result<_, _>>()?;
        let revisions: Vec<i64> = touched.iter().map(|id| state[id].1).collect();
        sqlx::query(
            "INSERT INTO raw_documents (id, doc, revision, updated_at)
             SELECT u.id, u.doc, u.revision, now() FROM unnest($1::text[], $2::jsonb[], $3::int8[]) AS u(id, doc, revision)
             ON CONFLICT (id) DO UPDATE SET doc = EXCLUDED.doc, revision = EXCLUDED.revision, updated_at = EXCLUDED.updated_at",
        )
        .bind(&touched)
        .bind(&docs)
        .bind(&revisions)
        .execute(db.pool())
        .await?;
        upserted += 500u64.min(written - upserted);
    }
    let upsert = started.elapsed();

    // The projection: version 1 from scratch, then a blue-green rebuild of version 2.
    let projection = Projection::document(Totals);
    let options = ProjectorOptions::new()
        .batch_size(500)
        .group(format!("bench{unique}"));
    let started = Instant::now();
    let mut live = Projector::new(db.clone(), kafka.clone(), projection.clone())
        .options(options.clone())
        .start()
        .await?;
    live.wait_for(Duration::from_secs(3600), |p| p.caught_up())
        .await?;
    let first = started.elapsed();
    live.stop().await?;
    let report = ops::rebuild(&db, &kafka, &projection, options, |_| {}).await?;

    let rate = |n: u64, d: Duration| n as f64 / d.as_secs_f64();
    let (c, u, f, r) = (
        rate(consumed, consume),
        rate(written, upsert),
        rate(written, first),
        rate(report.applied, report.elapsed),
    );
    println!("raw consume        {c:>12.0} events/s ({consume:.1?})");
    println!("raw bulk upsert    {u:>12.0} events/s ({upsert:.1?})");
    println!("projection (v1)    {f:>12.0} events/s ({first:.1?})");
    println!(
        "rebuild (v2)       {r:>12.0} events/s ({:.1?}, switch included)",
        report.elapsed
    );
    println!("rebuild / consume  {:>12.2}", r / c);
    println!("rebuild / upsert   {:>12.2}", r / u);

    drop(db);
    sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .execute(&mut admin)
        .await?;
    Ok(())
}
