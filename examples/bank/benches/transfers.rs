//! Transfers through the whole stack on Kafka: a transfer saga and an account service
//! in this process, talking only through topics. Reports transfers/s and end-to-end
//! latency (start sent → saga completed, seen on the saga's event topic) at several
//! concurrency levels, next to a baseline measured in the same run: one account command
//! round trip through the command bus, the unit a transfer is made of.
//!
//! ```text
//! KAFKA_BROKERS=127.0.0.1:19092 cargo bench -p bank --bench transfers
//! ```
//! `ANNALS_BENCH_TRANSFERS` (default 200) sets the transfers per concurrency level.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use annals_core::{Actor, AggregateId, CommandGateway as _, CommandId, Error, Metadata, Offset};
use annals_kafka_store::subscription::{
    AssignmentListener, Delivery, Subscription, TopicPartition,
};
use annals_kafka_store::{CommandBus, KafkaStoreOptions};
use annals_saga::{SagaCommand, SagaInstance};
use bank::domain::{Account, AccountCommand, Currency, Money, Transfer, TransferRequest};
use tokio::sync::oneshot;

fn meta() -> Metadata {
    Metadata::new(Actor::new("user:bench"), CommandId(uuid::Uuid::now_v7()))
}

fn eur(minor: i64) -> Money {
    Money::new(minor, Currency::EUR)
}

struct FromStart;

impl AssignmentListener for FromStart {
    fn assigned(&self, partitions: &[TopicPartition]) -> Result<Vec<Offset>, Error> {
        Ok(partitions.iter().map(|_| Offset(0)).collect())
    }
    fn revoked(&self, _: &[TopicPartition]) {}
}

type Waiters = Arc<Mutex<HashMap<String, oneshot::Sender<()>>>>;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 4)]
async fn main() -> anyhow::Result<()> {
    let brokers = std::env::var("KAFKA_BROKERS")
        .map_err(|_| anyhow::anyhow!("set KAFKA_BROKERS (bash scripts/kafka-dev.sh start)"))?;
    let per_level: usize = std::env::var("ANNALS_BENCH_TRANSFERS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(200);
    let prefix = format!("bench-{}", &uuid::Uuid::now_v7().simple().to_string()[20..]);
    let options = KafkaStoreOptions::new(&brokers)
        .topic_prefix(&prefix)
        .app_id(&prefix)
        .partitions(6)
        .session_timeout(Duration::from_secs(2));
    let accounts = bank::services::accounts(&options).await?;
    let transfers = bank::services::transfers(&options).await?;
    bank::services::wait_live(&accounts, "account").await?;
    bank::services::wait_live(&transfers, "transfer").await?;
    let bus = CommandBus::<Account>::connect(options.clone()).await?;
    let sagas = Arc::new(CommandBus::<SagaInstance<Transfer>>::connect(options.clone()).await?);
    const ACCOUNTS: usize = 64;
    for i in 0..ACCOUNTS {
        let id = format!("acc-{i}");
        bus.send(
            AccountCommand::Open {
                account: id.clone(),
                owner: id.clone(),
                currency: Currency::EUR,
            },
            meta(),
        )
        .await?;
        bus.send(
            AccountCommand::Deposit {
                account: id,
                amount: eur(1_000_000_000),
            },
            meta(),
        )
        .await?;
    }

    // Completion is seen on the saga's own event topic.
    let waiters: Waiters = Arc::new(Mutex::new(HashMap::new()));
    let mut sub = Subscription::start(
        &options,
        &format!("{prefix}.bench"),
        &options.events_topic("transfer"),
        Arc::new(FromStart),
        512,
    )?;
    let watcher = {
        let waiters = Arc::clone(&waiters);
        tokio::spawn(async move {
            while let Some(d) = sub.next().await {
                if let Delivery::Events(events) = d {
                    for e in events {
                        let done =
                            e.event_type == "SagaCompleted" || e.event_type == "SagaCompensated";
                        let waiter = done
                            .then(|| {
                                waiters
                                    .lock()
                                    .expect("lock")
                                    .remove(e.aggregate_id.as_str())
                            })
                            .flatten();
                        if let Some(tx) = waiter {
                            let _ = tx.send(());
                        }
                    }
                }
            }
        })
    };

    // Baseline: account command round trips (a deposit each), same run, same broker.
    let mut baseline = Vec::new();
    let t0 = Instant::now();
    for i in 0..per_level.min(100) {
        let s = Instant::now();
        bus.send(
            AccountCommand::Deposit {
                account: format!("acc-{}", i % ACCOUNTS),
                amount: eur(1),
            },
            meta(),
        )
        .await?;
        baseline.push(s.elapsed());
    }
    let baseline_rate = baseline.len() as f64 / t0.elapsed().as_secs_f64();
    baseline.sort();
    let base_p50 = percentile(&baseline, 0.5);
    println!(
        "command: KAFKA_BROKERS={brokers} cargo bench -p bank --bench transfers  (ANNALS_BENCH_TRANSFERS={per_level}, 6 partitions)"
    );
    println!(
        "baseline, account command round trip (sequential): {baseline_rate:.1}/s, p50 {base_p50:.1?}, p99 {:.1?}",
        percentile(&baseline, 0.99)
    );
    println!(
        "{:>11} {:>12} {:>10} {:>10} {:>14}",
        "concurrency", "transfers/s", "p50", "p99", "p50/command"
    );

    let mut n = 0usize;
    for concurrency in [1usize, 8, 32] {
        let started = Instant::now();
        let mut latencies = Vec::with_capacity(per_level);
        let mut next = 0;
        while next < per_level {
            let wave: Vec<_> = (next..(next + concurrency).min(per_level))
                .map(|_| {
                    n += 1;
                    let id = format!("b-{n}");
                    let from = n % ACCOUNTS;
                    let to = (n * 7 + 1) % ACCOUNTS;
                    let to = if to == from { (to + 1) % ACCOUNTS } else { to };
                    let (tx, rx) = oneshot::channel();
                    waiters.lock().expect("lock").insert(id.clone(), tx);
                    let sagas = Arc::clone(&sagas);
                    async move {
                        let s = Instant::now();
                        sagas
                            .send(
                                SagaCommand::Start {
                                    saga_id: AggregateId::new(id),
                                    input: TransferRequest {
                                        from: format!("acc-{from}"),
                                        to: format!("acc-{to}"),
                                        amount: eur(1),
                                    },
                                },
                                meta(),
                            )
                            .await
                            .map_err(|e| anyhow::anyhow!("start: {e:?}"))?;
                        tokio::time::timeout(Duration::from_secs(60), rx).await??;
                        Ok::<_, anyhow::Error>(s.elapsed())
                    }
                })
                .collect();
            next += wave.len();
            for r in futures::future::join_all(wave).await {
                latencies.push(r?);
            }
        }
        let rate = latencies.len() as f64 / started.elapsed().as_secs_f64();
        latencies.sort();
        let p50 = percentile(&latencies, 0.5);
        println!(
            "{concurrency:>11} {rate:>12.1} {:>10.1?} {:>10.1?} {:>14.1}",
            p50,
            percentile(&latencies, 0.99),
            p50.as_secs_f64() / base_p50.as_secs_f64()
        );
    }
    watcher.abort();
    accounts.shutdown().await;
    transfers.shutdown().await;
    Ok(())
}
