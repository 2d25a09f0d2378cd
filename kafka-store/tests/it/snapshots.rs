//! Snapshots on the compacted state topic: written with the events, used by the next
//! owner's restore, and never trusted over the log: a snapshot that does not decode, is
//! of another protocol version, does not match the log's hash, or is ahead of the log
//! falls back to replaying the events.

use std::collections::BTreeMap;
use std::time::Duration;

use annals_core::hash::EventHash;
use annals_core::partition::partition_for;
use annals_core::{AggregateId, Version};
use annals_kafka_store::command::protocol::{PROTOCOL_VERSION, SnapshotRecord};
use annals_kafka_store::{CommandBus, CommandProcessor, KafkaEventStore, KafkaStoreOptions};
use serde_json::json;

use crate::harness::{
    CounterHistory, check_counter_log, fault_options, meta, produce_raw, read_log, read_raw_records,
};
use crate::model::{Counter, CounterCommand, CounterEvent};
use crate::support::brokers;

const T: &str = "counter";

async fn start(options: &KafkaStoreOptions) -> annals_kafka_store::ProcessorHandle {
    let processor = CommandProcessor::<Counter>::new(options.clone())
        .start()
        .await
        .expect("processor starts");
    assert!(
        processor
            .wait_for(Duration::from_secs(30), |live| live.len() == 3)
            .await,
        "{:?}",
        processor.partition_errors()
    );
    processor
}

async fn add(bus: &CommandBus<Counter>, id: &str, by: u32) -> (Version, u64) {
    let done = bus
        .send_expecting(
            CounterCommand::Add {
                id: id.to_owned(),
                by,
            },
            meta(),
            None,
        )
        .await
        .unwrap_or_else(|e| panic!("add to {id}: {e:?}"));
    let CounterEvent::Added { total, .. } = done.events[0].payload;
    (done.version, total)
}

/// The latest snapshot of each aggregate on the snapshot topic, as raw JSON.
fn latest_snapshots(
    brokers: &str,
    options: &KafkaStoreOptions,
) -> BTreeMap<String, serde_json::Value> {
    let topic = options.snapshots_topic(T);
    let mut latest = BTreeMap::new();
    for p in 0..3 {
        for (_, key, payload) in read_raw_records(brokers, &topic, p) {
            let value = serde_json::from_slice(&payload).expect("snapshots are JSON");
            latest.insert(String::from_utf8(key).expect("utf-8 key"), value);
        }
    }
    latest
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restores_use_snapshots_and_fall_back_to_replay_when_one_does_not_fit() {
    let Some(brokers) = brokers() else { return };
    let options = fault_options(&brokers).command_timeout(Duration::from_secs(10));
    let processor = start(&options).await;
    let bus = CommandBus::<Counter>::connect(options.clone())
        .await
        .expect("bus");
    let ids = [
        "s-proof",
        "s-undecodable",
        "s-protocol",
        "s-hash",
        "s-ahead",
        "s-garbage",
    ];
    futures::future::join_all(ids.map(|id| {
        let bus = &bus;
        async move {
            for by in 1..=3 {
                add(bus, id, by).await;
            }
        }
    }))
    .await;
    processor.shutdown().await;

    // The processor wrote a snapshot per aggregate, in the transactions of its events,
    // matching the log's head.
    let store = KafkaEventStore::connect(options.clone())
        .await
        .expect("store");
    let log = check_counter_log(read_log(&store, T).await.expect("the log verifies"));
    let (b, o) = (brokers.clone(), options.clone());
    let snapshots = tokio::task::spawn_blocking(move || latest_snapshots(&b, &o))
        .await
        .expect("read snapshots");
    let head_hash = |id: &str| {
        log.by_command
            .values()
            .filter(|e| e.aggregate_id.as_str() == id)
            .max_by_key(|e| e.sequence)
            .map(|e| e.hash)
            .expect("events")
    };
    for id in ids {
        let s: SnapshotRecord<Counter> =
            serde_json::from_value(snapshots[id].clone()).expect("a snapshot of the counter");
        assert_eq!(s.v, PROTOCOL_VERSION);
        assert_eq!(s.version, Version(3), "{id}");
        assert_eq!(s.state.total, 6, "{id}");
        assert_eq!(
            s.hash,
            head_hash(id),
            "{id}: the snapshot matches the log's head"
        );
    }

    // Snapshots written by someone else, each after the processor's own.
    let topic = options.snapshots_topic(T);
    let put = |id: &'static str, value: Vec<u8>| {
        let (brokers, topic) = (brokers.clone(), topic.clone());
        async move {
            produce_raw(
                &brokers,
                &topic,
                partition_for(id.as_bytes(), 3),
                id.as_bytes(),
                &value,
                None,
            )
            .await;
        }
    };
    let snapshot = |version: u64, hash: EventHash, state: serde_json::Value| {
        serde_json::to_vec(&json!({
            "v": PROTOCOL_VERSION, "version": version, "hash": hash, "state": state
        }))
        .expect("json")
    };
    // Matches the log (version and hash) but carries another state: a restore that
    // reads snapshots shows it, a replay could not.
    put(
        "s-proof",
        snapshot(3, head_hash("s-proof"), json!({"total": 1000})),
    )
    .await;
    // Does not decode as a Counter any more (a changed state schema).
    put(
        "s-undecodable",
        snapshot(3, head_hash("s-undecodable"), json!({"total": "six"})),
    )
    .await;
    // Another protocol version.
    let mut other = json!({
        "v": PROTOCOL_VERSION + 1, "version": 3, "hash": head_hash("s-protocol"), "state": {"total": 1000}
    });
    put("s-protocol", serde_json::to_vec(&other).expect("json")).await;
    // The right version, the wrong hash: not the log's history.
    put(
        "s-hash",
        snapshot(3, EventHash::ZERO, json!({"total": 1000})),
    )
    .await;
    // Ahead of the log.
    other = json!({"v": PROTOCOL_VERSION, "version": 9, "hash": head_hash("s-ahead"), "state": {"total": 1000}});
    put("s-ahead", serde_json::to_vec(&other).expect("json")).await;
    // Not even JSON.
    put("s-garbage", b"\xff\x00 not a snapshot".to_vec()).await;

    let processor = start(&options).await;
    assert!(processor.partition_errors().is_empty());
    let (version, total) = add(&bus, "s-proof", 1).await;
    assert_eq!(version, Version(4));
    assert_eq!(
        total, 1001,
        "the restore took s-proof's state from the snapshot topic (a replay gives 7)"
    );
    let replayed = futures::future::join_all(ids[1..].iter().map(|id| add(&bus, id, 1))).await;
    for (id, outcome) in ids[1..].iter().zip(replayed) {
        assert_eq!(outcome, (Version(4), 7), "{id}: replayed from the log");
    }
    processor.shutdown().await;

    // Apart from the forged s-proof, the log is the plain fold of the adds.
    let log = check_counter_log(
        read_log(&store, T)
            .await
            .expect("the log verifies")
            .into_iter()
            .filter(|e| e.aggregate_id != AggregateId::new("s-proof"))
            .collect(),
    );
    for id in &ids[1..] {
        assert_eq!(
            log.counters[&AggregateId::new(*id)],
            CounterHistory {
                version: Version(4),
                total: 7,
                sum: 7
            }
        );
    }
}
