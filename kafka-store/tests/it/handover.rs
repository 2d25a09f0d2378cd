//! Partition handover between processors: stopping one of two processors moves its
//! partitions to the other with no lost, duplicated or reordered events.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use annals_core::partition::partition_for;
use annals_core::{AggregateId, Version};
use annals_kafka_store::{CommandBus, CommandProcessor, KafkaEventStore};

use crate::harness::{
    Ack, check_counter_log, eventually, fault_options, read_log, send_until_acked,
};
use crate::model::Counter;
use crate::support::brokers;

const COUNTERS: usize = 24;
const SENDERS: usize = 12;
const ROUNDS: usize = 10;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_one_of_two_processors_hands_its_partitions_over_without_loss_or_duplicates() {
    let Some(brokers) = brokers() else { return };
    let started = Instant::now();
    let options = fault_options(&brokers).command_timeout(Duration::from_secs(5));
    let first = CommandProcessor::<Counter>::new(options.clone())
        .start()
        .await
        .expect("first processor starts");
    assert!(
        first
            .wait_for(Duration::from_secs(30), |live| live.len() == 3)
            .await,
        "the first processor owns every partition: {:?}",
        first.partition_errors()
    );
    let second = CommandProcessor::<Counter>::new(options.clone())
        .start()
        .await
        .expect("second processor starts");
    assert!(
        eventually(Duration::from_secs(30), || {
            let (a, b) = (first.live_partitions(), second.live_partitions());
            !a.is_empty() && !b.is_empty() && a.is_disjoint(&b) && a.len() + b.len() == 3
        })
        .await,
        "the group splits the partitions: first {:?} second {:?}",
        first.live_partitions(),
        second.live_partitions()
    );
    let first_owned: BTreeSet<u32> = first.live_partitions();
    println!(
        "handover: first owns {first_owned:?}, second owns {:?}",
        second.live_partitions()
    );

    let bus = Arc::new(
        CommandBus::<Counter>::connect(options.clone())
            .await
            .expect("bus connects"),
    );
    let acked = Arc::new(AtomicUsize::new(0));
    let give_up = Instant::now() + Duration::from_secs(90);
    let mut senders = Vec::new();
    for s in 0..SENDERS {
        let (bus, acked) = (Arc::clone(&bus), Arc::clone(&acked));
        senders.push(tokio::spawn(async move {
            let mut acks = Vec::new();
            for round in 0..ROUNDS {
                for c in (s..COUNTERS).step_by(SENDERS) {
                    let by = u32::try_from(1 + (s * 7 + round * 3 + c) % 9).expect("small");
                    let ack = send_until_acked(&bus, &format!("h-{c}"), by, give_up)
                        .await
                        .unwrap_or_else(|id| panic!("command {id} never acknowledged"));
                    acked.fetch_add(1, Ordering::Relaxed);
                    acks.push(ack);
                }
            }
            acks
        }));
    }

    // Mid-stream: stop the first processor. Its partitions must move to the second.
    let total = COUNTERS * ROUNDS;
    assert!(
        eventually(Duration::from_secs(60), || acked.load(Ordering::Relaxed)
            >= total / 3)
        .await,
        "a third of the commands are acknowledged before the handover"
    );
    let at_shutdown = acked.load(Ordering::Relaxed);
    first.shutdown().await;
    let handed_over = Instant::now();
    assert!(
        second
            .wait_for(Duration::from_secs(30), |live| live.len() == 3)
            .await,
        "the second processor takes every partition: {:?}",
        second.partition_errors()
    );
    println!(
        "handover: first stopped after {at_shutdown}/{total} acknowledgements; second owns all after {:?}",
        handed_over.elapsed()
    );

    let mut acks: Vec<Ack> = Vec::new();
    for s in senders {
        acks.extend(s.await.expect("sender finishes"));
    }
    assert_eq!(acks.len(), total);
    assert!(
        second.partition_errors().is_empty(),
        "{:?}",
        second.partition_errors()
    );

    // The commands after the handover on the first's partitions were served by the second.
    for p in &first_owned {
        assert!(
            acks.iter()
                .any(|a| a.at > handed_over && partition_for(a.counter.as_bytes(), 3) == *p),
            "partition {p} served commands after its handover"
        );
    }

    // The log, read and verified by the store: gapless, each command once, every
    // acknowledgement matching what is stored, totals equal to the acknowledged adds.
    let store = KafkaEventStore::connect(options.clone())
        .await
        .expect("store connects");
    let log = check_counter_log(read_log(&store, "counter").await.expect("the log verifies"));
    assert_eq!(
        log.by_command.len(),
        total,
        "one event per command, no more"
    );
    let mut expected: BTreeMap<AggregateId, (u64, Version)> = BTreeMap::new();
    for ack in &acks {
        let event = &log.by_command[&ack.command_id];
        assert_eq!(
            event.event_id, ack.event_id,
            "the acknowledged event is the stored one"
        );
        assert_eq!(event.sequence, ack.version);
        assert_eq!(event.aggregate_id, ack.counter);
        let e = expected
            .entry(ack.counter.clone())
            .or_insert((0, Version(0)));
        e.0 += u64::from(ack.by);
        e.1 = e.1.next();
    }
    for (counter, (sum, version)) in &expected {
        let history = log.counters[counter];
        assert_eq!(
            history.total, *sum,
            "{counter}: total = sum of acknowledged adds"
        );
        assert_eq!(
            history.version, *version,
            "{counter}: one event per acknowledged add"
        );
    }
    let retried = acks.iter().filter(|a| a.attempts > 1).count();
    println!(
        "handover: {total} commands, {retried} needed a resend, {} counters; {:?} in all",
        expected.len(),
        started.elapsed()
    );
    second.shutdown().await;
}
