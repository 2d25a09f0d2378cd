//! The conformance suite of the [`EventStore`] port. Every implementation runs it, so the
//! in-memory store and the Kafka store are held to the same semantics.
//!
//! Use [`event_store_conformance!`](crate::event_store_conformance) with an async
//! expression that makes a fresh, empty store; it expands to one `#[tokio::test]` per case.
//! Each case takes a store and uses its own aggregate types.

use chrono::{DateTime, Utc};
use futures::TryStreamExt;

use crate::envelope::{RawEnvelope, RawPayload, UncommittedEvent};
use crate::error::Error;
use crate::hash::{ChainVerifier, EventHash};
use crate::ids::{AggregateId, CommandId, EventId, Offset, Partition, Version};
use crate::metadata::{Actor, Metadata};
use crate::partition::partition_for;
use crate::store::{EventStore, ExpectedVersion};

/// Expands to one `#[tokio::test]` per conformance case.
///
/// `event_store_conformance!(make)`: `make` is an async expression returning a fresh store
/// (anything implementing [`EventStore`]). `event_store_conformance!(optional: make)`:
/// `make` returns `Option<store>`, and `None` ends the case early (for a service that a
/// local run opted out of; the factory is expected to say so loudly).
#[macro_export]
macro_rules! event_store_conformance {
    (optional: $make:expr) => {
        $crate::event_store_conformance!(@cases $make;
            appends_and_reads_back_with_gapless_sequences_and_chained_hashes,
            expected_versions_are_enforced,
            a_conflicting_append_writes_nothing,
            reads_from_a_version,
            partition_reads_follow_offsets_and_placement,
            aggregates_on_one_partition_stay_separate,
            invalid_requests_are_refused,
            racing_writers_at_the_same_version_have_one_winner,
        );
    };
    ($make:expr) => {
        $crate::event_store_conformance!(optional: async { Some($make.await) });
    };
    (@cases $make:expr; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                if let Some(store) = $make.await {
                    $crate::conformance::$case(&store).await;
                }
            }
        )*
    };
}

fn at(n: i64) -> DateTime<Utc> {
    // Nanoseconds on purpose: stores keep microseconds, and must agree with themselves.
    DateTime::from_timestamp(1_767_225_600 + n, 123_456_789).unwrap_or_default()
}

/// An encoded test event with the given body.
pub fn event(n: u32) -> UncommittedEvent {
    let id = uuid::Uuid::now_v7();
    UncommittedEvent {
        event_id: EventId(id),
        event_type: "Ticked".to_owned(),
        schema_version: 1,
        occurred_at: at(i64::from(n)),
        metadata: Metadata::new(Actor::new("conformance"), CommandId(id))
            .with_extension("n", n.to_string()),
        payload: RawPayload {
            content_type: "application/json".to_owned(),
            bytes: format!("{{\"n\":{n}}}").into_bytes(),
        },
    }
}

fn id(s: &str) -> AggregateId {
    AggregateId::new(format!("{s}-{}", uuid::Uuid::now_v7().simple()))
}

async fn read_all(store: &dyn EventStore, t: &str, a: &AggregateId) -> Vec<RawEnvelope> {
    store
        .read_aggregate(t, a, Version(1))
        .try_collect()
        .await
        .expect("read_aggregate succeeds")
}

/// Appended events come back in order, sequenced from 1, hash-chained, with positions on
/// the murmur2 partition.
pub async fn appends_and_reads_back_with_gapless_sequences_and_chained_hashes(
    store: &dyn EventStore,
) {
    let t = "conf_basic";
    let a = id("acc");
    let first = store
        .append(t, &a, ExpectedVersion::NoStream, vec![event(1), event(2)])
        .await
        .expect("first append");
    let second = store
        .append(t, &a, ExpectedVersion::Exact(Version(2)), vec![event(3)])
        .await
        .expect("second append");
    assert_eq!(first.len(), 2);
    assert_eq!(second[0].sequence, Version(3));

    let read = read_all(store, t, &a).await;
    let seqs: Vec<u64> = read.iter().map(|e| e.sequence.0).collect();
    assert_eq!(seqs, [1, 2, 3]);
    assert_eq!(read[0].prev_hash, EventHash::ZERO);
    for pair in read.windows(2) {
        assert_eq!(
            pair[1].prev_hash, pair[0].hash,
            "each event links to the previous"
        );
    }
    for (stored, returned) in read.iter().zip(first.iter().chain(&second)) {
        assert_eq!(stored.hash, EventHash::of(stored));
        assert_eq!(stored.event_id, returned.event_id);
        assert_eq!(stored.hash, returned.hash);
        assert_eq!(stored.payload, returned.payload);
        assert_eq!(stored.metadata, returned.metadata);
        assert_eq!(stored.occurred_at, returned.occurred_at);
        assert_eq!(
            stored,
            &RawEnvelope {
                position: stored.position.clone(),
                ..returned.clone()
            }
        );
    }
    let partitions = store.partition_count(t).await.expect("partition count");
    let expected_partition = Partition(partition_for(a.as_bytes(), partitions));
    let mut last_offset = None;
    for e in &read {
        let pos = e.position.as_ref().expect("stored events have positions");
        assert_eq!(pos.topic, store.topic_for(t));
        assert_eq!(pos.partition, expected_partition);
        assert!(last_offset < Some(pos.offset), "offsets increase");
        last_offset = Some(pos.offset);
    }
    let mut verifier = ChainVerifier::from_start();
    for e in &read {
        verifier.verify(e).expect("chain verifies");
    }
}

/// `NoStream`, `Exact` and `Any` are checked against the authoritative version.
pub async fn expected_versions_are_enforced(store: &dyn EventStore) {
    let t = "conf_expect";
    let a = id("acc");
    store
        .append(t, &a, ExpectedVersion::NoStream, vec![event(1)])
        .await
        .expect("create");
    let err = store
        .append(t, &a, ExpectedVersion::NoStream, vec![event(2)])
        .await
        .expect_err("stream exists");
    assert!(
        matches!(err, Error::Conflict { expected: ExpectedVersion::NoStream, actual: Version(1), ref aggregate } if aggregate.aggregate_id == a),
        "{err:?}"
    );
    let err = store
        .append(t, &a, ExpectedVersion::Exact(Version(5)), vec![event(2)])
        .await
        .expect_err("wrong version");
    assert!(
        matches!(
            err,
            Error::Conflict {
                expected: ExpectedVersion::Exact(Version(5)),
                actual: Version(1),
                ..
            }
        ),
        "{err:?}"
    );
    let ok = store
        .append(t, &a, ExpectedVersion::Any, vec![event(2)])
        .await
        .expect("any version");
    assert_eq!(ok[0].sequence, Version(2));
    let err = store
        .append(
            t,
            &id("new"),
            ExpectedVersion::Exact(Version(1)),
            vec![event(1)],
        )
        .await
        .expect_err("stream does not exist");
    assert!(
        matches!(
            err,
            Error::Conflict {
                actual: Version(0),
                ..
            }
        ),
        "{err:?}"
    );
}

/// A refused multi-event append leaves no trace.
pub async fn a_conflicting_append_writes_nothing(store: &dyn EventStore) {
    let t = "conf_atomic";
    let a = id("acc");
    store
        .append(t, &a, ExpectedVersion::NoStream, vec![event(1)])
        .await
        .expect("create");
    store
        .append(
            t,
            &a,
            ExpectedVersion::Exact(Version(0)),
            vec![event(2), event(3), event(4)],
        )
        .await
        .expect_err("conflict");
    let read = read_all(store, t, &a).await;
    assert_eq!(read.len(), 1, "nothing of the refused append was stored");
    let batch = store
        .append(
            t,
            &a,
            ExpectedVersion::Exact(Version(1)),
            vec![event(2), event(3), event(4)],
        )
        .await
        .expect("batch");
    let seqs: Vec<u64> = batch.iter().map(|e| e.sequence.0).collect();
    assert_eq!(seqs, [2, 3, 4]);
}

/// `read_aggregate` from a version skips earlier events but still verifies them.
pub async fn reads_from_a_version(store: &dyn EventStore) {
    let t = "conf_from";
    let a = id("acc");
    store
        .append(
            t,
            &a,
            ExpectedVersion::NoStream,
            (1..=5).map(event).collect(),
        )
        .await
        .expect("append");
    let tail: Vec<RawEnvelope> = store
        .read_aggregate(t, &a, Version(4))
        .try_collect()
        .await
        .expect("read tail");
    let seqs: Vec<u64> = tail.iter().map(|e| e.sequence.0).collect();
    assert_eq!(seqs, [4, 5]);
    let none = read_all(store, t, &id("missing")).await;
    assert!(none.is_empty(), "an unknown aggregate has no events");
}

/// Partition reads return every event of the partition in offset order, from an offset.
pub async fn partition_reads_follow_offsets_and_placement(store: &dyn EventStore) {
    let t = "conf_partition";
    let ids: Vec<AggregateId> = (0..12).map(|i| id(&format!("p{i}"))).collect();
    for (i, a) in ids.iter().enumerate() {
        store
            .append(
                t,
                a,
                ExpectedVersion::NoStream,
                vec![event(i as u32), event(100)],
            )
            .await
            .expect("append");
    }
    let partitions = store.partition_count(t).await.expect("count");
    let mut seen = 0;
    for p in 0..partitions {
        let events: Vec<RawEnvelope> = store
            .read_partition(t, Partition(p), Offset(0))
            .try_collect()
            .await
            .expect("read partition");
        for e in &events {
            assert_eq!(partition_for(e.aggregate_id.as_bytes(), partitions), p);
        }
        let offsets: Vec<Offset> = events
            .iter()
            .map(|e| e.position.as_ref().expect("position").offset)
            .collect();
        assert!(offsets.windows(2).all(|w| w[0] < w[1]), "offset order");
        seen += events.len();
        if let Some(second) = offsets.get(1) {
            let from_second: Vec<RawEnvelope> = store
                .read_partition(t, Partition(p), *second)
                .try_collect()
                .await
                .expect("read from offset");
            assert_eq!(from_second.len(), events.len() - 1);
            assert_eq!(from_second[0].event_id, events[1].event_id);
        }
    }
    assert_eq!(seen, 24, "every event is on exactly one partition");
}

/// Two aggregates that share a partition keep separate, gapless streams.
pub async fn aggregates_on_one_partition_stay_separate(store: &dyn EventStore) {
    let t = "conf_interleave";
    let a = id("a");
    let b = id("b");
    for round in 0..3 {
        for x in [&a, &b] {
            store
                .append(t, x, ExpectedVersion::Exact(Version(round)), vec![event(1)])
                .await
                .expect("append");
        }
    }
    for x in [&a, &b] {
        let read = read_all(store, t, x).await;
        assert!(read.iter().all(|e| &e.aggregate_id == x));
        let seqs: Vec<u64> = read.iter().map(|e| e.sequence.0).collect();
        assert_eq!(seqs, [1, 2, 3]);
    }
}

/// Empty ids, bad aggregate types and empty appends are refused with a typed error.
pub async fn invalid_requests_are_refused(store: &dyn EventStore) {
    let t = "conf_invalid";
    let err = store
        .append(
            t,
            &AggregateId::new(""),
            ExpectedVersion::Any,
            vec![event(1)],
        )
        .await
        .expect_err("empty id");
    assert!(matches!(err, Error::InvalidRequest { .. }), "{err:?}");
    let err = store
        .append(t, &id("a"), ExpectedVersion::Any, vec![])
        .await
        .expect_err("no events");
    assert!(matches!(err, Error::InvalidRequest { .. }), "{err:?}");
    for bad_type in ["Bank Account", "", "a.b", "UPPER"] {
        let err = store
            .append(bad_type, &id("a"), ExpectedVersion::Any, vec![event(1)])
            .await
            .expect_err("bad aggregate type");
        assert!(
            matches!(err, Error::InvalidRequest { .. }),
            "type `{bad_type}`: {err:?}"
        );
    }
}

/// Writers racing at the same expected version: exactly one succeeds, the stream stays
/// gapless.
pub async fn racing_writers_at_the_same_version_have_one_winner(store: &dyn EventStore) {
    let t = "conf_race";
    let a = id("acc");
    store
        .append(t, &a, ExpectedVersion::NoStream, vec![event(0)])
        .await
        .expect("create");
    let attempts = (0..8).map(|i| {
        let a = a.clone();
        async move {
            store
                .append(t, &a, ExpectedVersion::Exact(Version(1)), vec![event(i)])
                .await
        }
    });
    let results = futures::future::join_all(attempts).await;
    let wins = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(wins, 1, "one writer wins: {results:?}");
    assert!(
        results
            .iter()
            .filter_map(|r| r.as_ref().err())
            .all(|e| matches!(e, Error::Conflict { .. })),
        "the others conflict"
    );
    let seqs: Vec<u64> = read_all(store, t, &a)
        .await
        .iter()
        .map(|e| e.sequence.0)
        .collect();
    assert_eq!(seqs, [1, 2]);
}
