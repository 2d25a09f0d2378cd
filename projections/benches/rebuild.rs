//! Rebuild rate of the bank's balances projection next to the raw rates of its two
//! halves, in the same run: consuming the topic (a subscription that only counts) and
//! bulk-upserting the same documents into Postgres (the runner's statement, without
//! Kafka).
//!
//! The projection mirrors `bank::read_models::AccountBalances` (this crate cannot
//! depend on the example): the same event shapes on an `account` topic, the same
//! document, the same checks. Accounts are opened, then deposited to and withdrawn from:
//! 100 events per account in appends (Kafka transactions) of 20, 100 accounts writing
//! at once, so a partition holds runs of 20 events of one account. The bulk upsert
//! writes the documents in the order the raw consume received the events, 500 at a
//! time, as the runner's batches do.
//!
//! Needs `KAFKA_BROKERS` and Postgres (`ANNALS_TEST_POSTGRES`, default
//! `postgres://postgres@127.0.0.1:5432`); `ANNALS_BENCH_EVENTS` events (default 100000).
//! Run: `ANNALS_BENCH_EVENTS=1000000 cargo bench -p annals-projections --bench rebuild`.

use std::collections::{HashMap, HashSet};
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
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::Connection;

/// The events per account.
const PER_ACCOUNT: u64 = 100;
/// The events per append.
const PER_APPEND: usize = 20;
/// Accounts writing at once.
const WRITERS: usize = 100;
/// Partitions of the topic.
const PARTITIONS: u32 = 4;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct Money {
    minor: i64,
    currency: String3,
}

/// A currency code, as the bank stores it (a JSON string).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
struct String3([u8; 3]);

impl From<String3> for String {
    fn from(c: String3) -> String {
        String::from_utf8_lossy(&c.0).into_owned()
    }
}

impl TryFrom<String> for String3 {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        match s.as_bytes() {
            [a, b, c] => Ok(Self([*a, *b, *c])),
            _ => Err(format!("bad currency {s}")),
        }
    }
}

const EUR: String3 = String3(*b"EUR");

/// The bank's account events, with the same names and JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, DomainEvent)]
enum AccountEvent {
    #[event(name = "AccountOpened", version = 1)]
    Opened { owner: String, currency: String3 },
    #[event(name = "MoneyDeposited", version = 1)]
    Deposited { amount: Money, balance_after: i64 },
    #[event(name = "MoneyWithdrawn", version = 1)]
    Withdrawn { amount: Money, balance_after: i64 },
}

/// The bank's balance document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct AccountBalance {
    owner: String,
    currency: String3,
    balance: i64,
    status: String,
    version: u64,
    updated_at: DateTime<Utc>,
}

#[derive(Debug, thiserror::Error)]
enum BalanceError {
    #[error("event {got} of {account} does not follow {last}")]
    OutOfSequence {
        account: String,
        last: u64,
        got: u64,
    },
    #[error("event {sequence} of {account} records {recorded}, computed {computed}")]
    Mismatch {
        account: String,
        sequence: u64,
        recorded: i64,
        computed: i64,
    },
}

struct AccountBalances;

impl DocumentProjection for AccountBalances {
    const NAME: &'static str = "bench_account_balances";
    const AGGREGATES: &'static [&'static str] = &["account"];
    type Event = AccountEvent;
    type Document = AccountBalance;
    type Error = BalanceError;

    fn document_id(&self, event: &Envelope<AccountEvent>) -> Option<String> {
        Some(event.aggregate_id.to_string())
    }

    fn apply(
        &self,
        doc: &mut Option<AccountBalance>,
        event: &Envelope<AccountEvent>,
    ) -> Result<(), BalanceError> {
        let sequence = event.sequence.0;
        if doc.as_ref().is_some_and(|d| sequence <= d.version) {
            return Ok(());
        }
        let last = doc.as_ref().map_or(0, |d| d.version);
        if sequence != last + 1 {
            return Err(BalanceError::OutOfSequence {
                account: event.aggregate_id.to_string(),
                last,
                got: sequence,
            });
        }
        let (delta, recorded) = match (&event.payload, doc.as_mut()) {
            (AccountEvent::Opened { owner, currency }, _) => {
                *doc = Some(AccountBalance {
                    owner: owner.clone(),
                    currency: *currency,
                    balance: 0,
                    status: "Open".to_owned(),
                    version: sequence,
                    updated_at: event.occurred_at,
                });
                return Ok(());
            }
            (_, None) => {
                return Err(BalanceError::OutOfSequence {
                    account: event.aggregate_id.to_string(),
                    last: 0,
                    got: sequence,
                });
            }
            (
                AccountEvent::Deposited {
                    amount,
                    balance_after,
                },
                Some(_),
            ) => (amount.minor, *balance_after),
            (
                AccountEvent::Withdrawn {
                    amount,
                    balance_after,
                },
                Some(_),
            ) => (-amount.minor, *balance_after),
        };
        let Some(d) = doc.as_mut() else {
            return Ok(());
        };
        let computed = d.balance + delta;
        if computed != recorded {
            return Err(BalanceError::Mismatch {
                account: event.aggregate_id.to_string(),
                sequence,
                recorded,
                computed,
            });
        }
        d.balance = computed;
        d.version = sequence;
        d.updated_at = event.occurred_at;
        Ok(())
    }
}

/// The events of account `n`: opened, then deposits and withdrawals.
fn account_events(n: u64) -> Vec<AccountEvent> {
    let mut events = vec![AccountEvent::Opened {
        owner: format!("owner {n}"),
        currency: EUR,
    }];
    let mut balance = 0;
    for k in 1..PER_ACCOUNT {
        let minor = i64::try_from((n + k) % 97 + 1).unwrap_or(1) * 100;
        let amount = Money {
            minor,
            currency: EUR,
        };
        if k % 3 == 0 && balance >= minor {
            balance -= minor;
            events.push(AccountEvent::Withdrawn {
                amount,
                balance_after: balance,
            });
        } else {
            balance += minor;
            events.push(AccountEvent::Deposited {
                amount,
                balance_after: balance,
            });
        }
    }
    events
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
        .partitions(PARTITIONS)
        .session_timeout(Duration::from_secs(6));
    let store = Arc::new(KafkaEventStore::connect(kafka.clone()).await?);

    // Write: appends of PER_APPEND events, WRITERS accounts at a time.
    let started = Instant::now();
    let accounts = events.div_ceil(PER_ACCOUNT);
    let ids: Vec<String> = (0..accounts).map(|i| format!("acc-{i:07}")).collect();
    let mut written = 0u64;
    for (c, chunk) in ids.chunks(WRITERS).enumerate() {
        let appends = chunk.iter().enumerate().map(|(i, id)| {
            let store = store.clone();
            let n = (c * WRITERS + i) as u64;
            async move {
                let aggregate = AggregateRef::new("account", AggregateId::new(id.as_str()));
                let metadata =
                    Metadata::new(Actor::new("user:bench"), CommandId(uuid::Uuid::now_v7()));
                let mut stored = 0;
                for part in account_events(n).chunks(PER_APPEND) {
                    let batch = part
                        .iter()
                        .map(|e| {
                            encode_event(
                                e,
                                &aggregate,
                                &JsonCodec,
                                EventId(uuid::Uuid::now_v7()),
                                Utc::now(),
                                &metadata,
                            )
                        })
                        .collect::<Result<Vec<_>, _>>()?;
                    stored += store
                        .append(
                            "account",
                            &aggregate.aggregate_id,
                            ExpectedVersion::Exact(annals_core::Version(stored)),
                            batch,
                        )
                        .await?
                        .len() as u64;
                }
                anyhow::Ok(stored)
            }
        });
        let before = written;
        for n in futures::future::try_join_all(appends).await? {
            written += n;
        }
        if written / 100_000 != before / 100_000 {
            eprintln!("  written {written} events ({:.0?})", started.elapsed());
        }
    }
    let write = started.elapsed();
    println!(
        "wrote {written} events ({accounts} accounts) in {write:.1?}: {:.0} events/s",
        written as f64 / write.as_secs_f64()
    );

    // Raw consume: the same subscription the runner uses, counting only.
    let topic = kafka.events_topic("account");
    let mut subscription = Subscription::start(
        &kafka,
        &format!("raw{unique}"),
        &topic,
        Arc::new(FromStart),
        500,
    )?;
    let started = Instant::now();
    let (mut consumed, mut caught_up) = (0u64, HashSet::new());
    // The order events arrived in: (account, sequence), for the bulk upsert.
    let mut order: Vec<(usize, u64)> = Vec::with_capacity(written as usize);
    while caught_up.len() < PARTITIONS as usize || consumed < written {
        match subscription.next().await {
            Some(Delivery::Events(batch)) => {
                consumed += batch.len() as u64;
                for raw in batch {
                    let account = raw.aggregate_id.as_str()[4..].parse().unwrap_or(0);
                    order.push((account, raw.sequence.0));
                }
            }
            Some(Delivery::CaughtUp(tp)) => {
                caught_up.insert(tp.partition);
            }
            other => anyhow::bail!("unexpected delivery {other:?}"),
        }
    }
    let consume = started.elapsed();
    subscription.stop().await;

    // Raw bulk upsert: the runner's statement, the same documents, 500 events' worth at
    // a time (events in the order of one partition: an account's events in a row).
    let name = format!("annals_bench_{unique}");
    let mut admin = sqlx::PgConnection::connect(&format!("{server}/postgres")).await?;
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut admin)
        .await?;
    let db = Database::connect(&format!("{server}/{name}")).await?;
    sqlx::query(
        "CREATE TABLE raw_documents (id text PRIMARY KEY, doc jsonb NOT NULL, \
         revision bigint NOT NULL, updated_at timestamptz NOT NULL DEFAULT now())",
    )
    .execute(db.pool())
    .await?;
    // The balance after each event of each account, computed before the clock starts.
    let after: Vec<Vec<i64>> = (0..ids.len())
        .map(|a| {
            account_events(a as u64)
                .iter()
                .map(|e| match e {
                    AccountEvent::Opened { .. } => 0,
                    AccountEvent::Deposited { balance_after, .. }
                    | AccountEvent::Withdrawn { balance_after, .. } => *balance_after,
                })
                .collect()
        })
        .collect();
    let started = Instant::now();
    let mut state: HashMap<usize, (AccountBalance, i64)> = HashMap::new();
    let now = Utc::now();
    let mut upserted = 0u64;
    let mut batches = order.chunks(500);
    loop {
        let mut touched = Vec::new();
        for &(a, sequence) in batches.next().unwrap_or(&[]) {
            let entry = state.entry(a).or_insert_with(|| {
                (
                    AccountBalance {
                        owner: String::new(),
                        currency: EUR,
                        balance: 0,
                        status: "Open".to_owned(),
                        version: 0,
                        updated_at: now,
                    },
                    0,
                )
            });
            if sequence == 1 {
                entry.0.owner = format!("owner {a}");
            }
            entry.0.balance = after[a][usize::try_from(sequence - 1).unwrap_or(0)];
            entry.0.version = sequence;
            entry.1 += 1;
            touched.push(a);
            upserted += 1;
        }
        if touched.is_empty() {
            break;
        }
        touched.sort_unstable();
        touched.dedup();
        let docs: Vec<serde_json::Value> = touched
            .iter()
            .map(|a| serde_json::to_value(&state[a].0))
            .collect::<Result<_, _>>()?;
        let revisions: Vec<i64> = touched.iter().map(|a| state[a].1).collect();
        let keys: Vec<&String> = touched.iter().map(|a| &ids[*a]).collect();
        sqlx::query(
            "INSERT INTO raw_documents (id, doc, revision, updated_at)
             SELECT u.id, u.doc, u.revision, now()
             FROM unnest($1::text[], $2::jsonb[], $3::int8[]) AS u(id, doc, revision)
             ON CONFLICT (id) DO UPDATE
               SET doc = EXCLUDED.doc, revision = EXCLUDED.revision, updated_at = EXCLUDED.updated_at",
        )
        .bind(&keys)
        .bind(&docs)
        .bind(&revisions)
        .execute(db.pool())
        .await?;
    }
    let upsert = started.elapsed();

    // The projection: version 1 from scratch, then a blue-green rebuild of version 2.
    let projection = Projection::document(AccountBalances);
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
    let first_applied = live.progress().applied;
    live.stop().await?;
    let report = ops::rebuild(&db, &kafka, &projection, options, |_| {}).await?;
    anyhow::ensure!(
        first_applied == written && report.applied == written,
        "applied {first_applied} and {} of {written}",
        report.applied
    );
    let documents = annals_projections::read::documents::<AccountBalances>(&db).await?;
    anyhow::ensure!(
        documents.len() as u64 == accounts && documents.values().all(|d| d.version == PER_ACCOUNT),
        "every account is complete"
    );

    let rate = |n: u64, d: Duration| n as f64 / d.as_secs_f64();
    let (c, u, f, r) = (
        rate(consumed, consume),
        rate(upserted, upsert),
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
