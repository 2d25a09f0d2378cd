//! `kill -9` of a command processor in the middle of its transactions, several times,
//! under a steady stream of commands: every command takes effect once or not at all,
//! sequences stay gapless, state equals the fold of the log, and a restarted processor
//! (snapshot + log) decides on exactly that state.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use annals_core::partition::partition_for;
use annals_core::{
    AggregateId, AggregateRepository, CommandError, CommandId, Error, ExpectedVersion, Version,
};
use annals_kafka_store::{CommandBus, KafkaEventStore};

use crate::child::{ChildConfig, ChildProcessor};
use crate::harness::{Ack, Rng, check_counter_log, eventually, meta, read_log, send_until_acked};
use crate::model::{Counter, CounterCommand};
use crate::support::brokers;

const KILLS: usize = 4;
const SENDERS: usize = 8;

/// Two counters on each of the three partitions.
fn counters() -> Vec<String> {
    let mut per_partition = [0; 3];
    (0..)
        .map(|i| format!("k-{i}"))
        .filter(|id| {
            let p = partition_for(id.as_bytes(), 3) as usize;
            per_partition[p] += 1;
            per_partition[p] <= 2
        })
        .take(6)
        .collect()
}

/// What a caller knows about one command.
enum Sent {
    /// Acknowledged (after as many resends with the same command id as it took).
    Acked(Ack),
    /// Sent once and given up on after a timeout: it may or may not have taken effect.
    Unknown { command_id: CommandId },
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_transaction_applies_every_command_once_or_not_at_all() {
    let Some(brokers) = brokers() else { return };
    let started = Instant::now();
    let mut rng = Rng::from_clock("crash");
    let config = ChildConfig::isolated(&brokers);
    let options = config.options().command_timeout(Duration::from_secs(3));
    let mut child = ChildProcessor::spawn(&config);
    child.wait_live(Duration::from_secs(60)).await;
    let bus = Arc::new(
        CommandBus::<Counter>::connect(options.clone())
            .await
            .expect("bus connects"),
    );

    let outcomes = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let give_up = Instant::now() + Duration::from_secs(100);
    let counters = Arc::new(counters());
    let mut senders = Vec::new();
    for s in 0..SENDERS {
        let (bus, outcomes, stop) = (Arc::clone(&bus), Arc::clone(&outcomes), Arc::clone(&stop));
        let counters = Arc::clone(&counters);
        senders.push(tokio::spawn(async move {
            let mut sent = Vec::new();
            let mut n = 0usize;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let counter = counters[(s + n) % counters.len()].clone();
                let by = u32::try_from(1 + (s * 5 + n) % 9).expect("small");
                if n.is_multiple_of(5) {
                    // A caller that sends once and gives up on a timeout.
                    let m = meta();
                    let add = CounterCommand::Add {
                        id: counter.clone(),
                        by,
                    };
                    match bus.send_expecting(add, m.clone(), None).await {
                        Ok(done) => sent.push(Sent::Acked(Ack {
                            command_id: m.command_id,
                            counter: AggregateId::new(&counter),
                            by,
                            event_id: done.events[0].event_id,
                            version: done.version,
                            at: Instant::now(),
                            attempts: 1,
                        })),
                        Err(CommandError::Store(Error::Timeout { .. } | Error::Backend { .. })) => {
                            sent.push(Sent::Unknown {
                                command_id: m.command_id,
                            });
                        }
                        Err(other) => panic!("unexpected outcome {other:?}"),
                    }
                } else {
                    let ack = send_until_acked(&bus, &counter, by, give_up)
                        .await
                        .unwrap_or_else(|id| panic!("command {id} never acknowledged"));
                    sent.push(Sent::Acked(ack));
                }
                outcomes.fetch_add(1, Ordering::Relaxed);
            }
            sent
        }));
    }

    for kill in 1..=KILLS {
        // Kill while commands flow: after a few more outcomes, at a random moment.
        let seen = outcomes.load(Ordering::Relaxed);
        assert!(
            eventually(Duration::from_secs(60), || outcomes.load(Ordering::Relaxed)
                >= seen + 8)
            .await,
            "commands flow before kill {kill}"
        );
        tokio::time::sleep(Duration::from_millis(rng.below(400))).await;
        child.kill9();
        println!(
            "crash: kill -9 #{kill} after {} outcomes, at {:?}",
            outcomes.load(Ordering::Relaxed),
            started.elapsed()
        );
        let t = Instant::now();
        child = ChildProcessor::spawn(&config);
        child.wait_live(Duration::from_secs(60)).await;
        println!("crash: restarted child live after {:?}", t.elapsed());
    }
    let seen = outcomes.load(Ordering::Relaxed);
    assert!(
        eventually(Duration::from_secs(60), || outcomes.load(Ordering::Relaxed)
            >= seen + 8)
        .await,
        "commands flow after the last restart"
    );
    stop.store(true, Ordering::Relaxed);
    let mut sent = Vec::new();
    for s in senders {
        sent.extend(s.await.expect("sender finishes"));
    }

    // The log, verified by the store, against what the callers were told.
    let store = Arc::new(
        KafkaEventStore::connect(options.clone())
            .await
            .expect("store connects"),
    );
    let log = check_counter_log(read_log(&store, "counter").await.expect("the log verifies"));
    let mut sent_ids = HashSet::new();
    let (mut acks, mut unknown, mut unknown_applied, mut resent) = (0, 0, 0, 0);
    for s in &sent {
        match s {
            Sent::Acked(ack) => {
                acks += 1;
                resent += usize::from(ack.attempts > 1);
                sent_ids.insert(ack.command_id);
                let event = log
                    .by_command
                    .get(&ack.command_id)
                    .unwrap_or_else(|| panic!("acknowledged command {} is lost", ack.command_id));
                assert_eq!(
                    event.event_id, ack.event_id,
                    "the acknowledged event is stored"
                );
                assert_eq!(event.sequence, ack.version);
                assert_eq!(event.aggregate_id, ack.counter);
            }
            Sent::Unknown { command_id } => {
                unknown += 1;
                sent_ids.insert(*command_id);
                unknown_applied += usize::from(log.by_command.contains_key(command_id));
            }
        }
    }
    for (command_id, event) in &log.by_command {
        assert!(
            sent_ids.contains(command_id),
            "event {} of a command nobody sent",
            event.event_id
        );
    }

    // State as the store loads it equals the fold of the log.
    let repo = AggregateRepository::<Counter>::new(store.clone());
    for (id, history) in &log.counters {
        let loaded = repo.load(id).await.expect("loads");
        assert_eq!(loaded.version, history.version, "{id}");
        assert_eq!(loaded.state.total, history.total, "{id}");
        assert_eq!(
            history.total, history.sum,
            "{id}: the total is the sum of its adds"
        );
    }

    // One more crash while idle; the restarted processor restores from snapshots and the
    // log and decides on exactly the state above: the expected version is the log's.
    child.kill9();
    let mut child = ChildProcessor::spawn(&config);
    child.wait_live(Duration::from_secs(60)).await;
    let mut after: BTreeMap<AggregateId, (Version, u64)> = BTreeMap::new();
    for (id, history) in &log.counters {
        // Resent with the same command id after a timeout, as callers must.
        let m = meta();
        let t = Instant::now();
        let mut attempts = 0;
        let done = loop {
            attempts += 1;
            match bus
                .send_expecting(
                    CounterCommand::Add {
                        id: id.as_str().to_owned(),
                        by: 1,
                    },
                    m.clone(),
                    Some(ExpectedVersion::Exact(history.version)),
                )
                .await
            {
                Ok(done) => break done,
                Err(CommandError::Store(Error::Timeout { .. })) if attempts < 5 => {}
                Err(e) => panic!("{id} at {}: {e:?}", history.version),
            }
        };
        if attempts > 1 {
            println!(
                "crash: final command to {id} took {attempts} sends, {:?}",
                t.elapsed()
            );
        }
        assert_eq!(done.version, history.version.next(), "{id}");
        let annals_core::Envelope { payload, .. } = &done.events[0];
        let crate::model::CounterEvent::Added { total, .. } = payload;
        assert_eq!(
            *total,
            history.total + 1,
            "{id}: decided on the restored state"
        );
        after.insert(id.clone(), (done.version, *total));
    }
    assert_eq!(after.len(), log.counters.len());
    println!(
        "crash: {KILLS}+1 kills; {acks} acknowledged ({resent} after resends), {unknown} given up \
         of which {unknown_applied} took effect; {} events; {:?} in all",
        log.by_command.len(),
        started.elapsed()
    );
    child.kill9();
}
