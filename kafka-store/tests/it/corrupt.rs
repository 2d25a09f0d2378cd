//! Corrupt records in an event topic, written by a raw producer as any other client
//! could: a record without annals headers, and an event whose content no longer matches
//! its hash. Reads fail with typed errors that name topic, partition and offset; a
//! processor that restores over them reports them per partition and serves the others;
//! nothing panics.

use std::time::Duration;

use annals_core::hash::EventHash;
use annals_core::partition::partition_for;
use annals_core::{
    AggregateId, AggregateRef, ChainBreak, Error, EventStore, ExpectedVersion, Offset, Partition,
    Position, RawEnvelope, Version,
};
use annals_kafka_store::{CommandBus, CommandProcessor, KafkaEventStore, wire};
use futures::TryStreamExt;

use crate::harness::{added, annals_thread_panics, eventually, fault_options, meta, produce_raw};
use crate::model::{Counter, CounterCommand};
use crate::support::brokers;

const T: &str = "counter";

/// Three counter ids, one on each of the three partitions, in partition order.
fn one_per_partition() -> [String; 3] {
    let mut ids: [Option<String>; 3] = [None, None, None];
    for i in 0.. {
        let id = format!("c-{i}");
        let p = partition_for(id.as_bytes(), 3) as usize;
        ids[p].get_or_insert(id);
        if ids.iter().all(Option::is_some) {
            break;
        }
    }
    ids.map(|id| id.expect("found"))
}

async fn read(store: &KafkaEventStore, partition: u32) -> Result<Vec<RawEnvelope>, Error> {
    store
        .read_partition(T, Partition(partition), Offset(0))
        .try_collect()
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_records_fail_reads_and_restores_with_their_position_and_nothing_panics() {
    let Some(brokers) = brokers() else { return };
    let options = fault_options(&brokers)
        .operation_timeout(Duration::from_secs(10))
        .command_timeout(Duration::from_secs(10));
    let topic = options.events_topic(T);
    let [missing_id, tampered_id, healthy_id] = one_per_partition();
    let (missing_p, tampered_p, healthy_p) = (0, 1, 2);
    let store = KafkaEventStore::connect(options.clone())
        .await
        .expect("store");
    for id in [&missing_id, &tampered_id, &healthy_id] {
        store
            .append(
                T,
                &AggregateId::new(id.as_str()),
                ExpectedVersion::NoStream,
                vec![added(id, 1, 1, &meta())],
            )
            .await
            .expect("a first event");
    }

    // A record without annals headers, on the first partition.
    let missing_at = produce_raw(
        &brokers,
        &topic,
        missing_p,
        missing_id.as_bytes(),
        br#"{"Added":{"by":1,"total":2}}"#,
        None,
    )
    .await;
    // A well-formed second event whose payload was changed after it was sealed.
    let first = store
        .read_aggregate(T, &AggregateId::new(tampered_id.as_str()), Version(1))
        .try_collect::<Vec<_>>()
        .await
        .expect("read")
        .remove(0);
    let sealed = added(&tampered_id, 1, 2, &meta()).seal(
        &AggregateRef::new(T, AggregateId::new(tampered_id.as_str())),
        Version(2),
        first.hash,
    );
    let tampered_at = produce_raw(
        &brokers,
        &topic,
        tampered_p,
        tampered_id.as_bytes(),
        br#"{"Added":{"by":1000,"total":1001}}"#,
        Some(wire::encode_headers(&sealed)),
    )
    .await;

    let position = |partition, offset| Position {
        topic: topic.clone(),
        partition: Partition(partition),
        offset,
    };
    let err = read(&store, missing_p).await.expect_err("malformed");
    assert!(
        matches!(&err, Error::MalformedRecord { position: at, reason } if *at == position(missing_p, missing_at) && reason.contains("missing header")),
        "{err:?}"
    );
    let err = store
        .read_aggregate(T, &AggregateId::new(missing_id.as_str()), Version(1))
        .try_collect::<Vec<_>>()
        .await
        .expect_err("malformed");
    assert!(matches!(err, Error::MalformedRecord { .. }), "{err:?}");
    let err = read(&store, tampered_p).await.expect_err("tampered");
    match &err {
        Error::HashChain { at, kind } => {
            assert_eq!(at.position, Some(position(tampered_p, tampered_at)));
            assert_eq!(at.sequence, Version(2));
            assert!(
                matches!(kind, ChainBreak::ContentChanged { stored, computed } if *stored == sealed.hash && *computed != EventHash::ZERO),
                "{kind:?}"
            );
        }
        other => panic!("expected a broken hash chain, got {other:?}"),
    }
    assert_eq!(read(&store, healthy_p).await.expect("healthy").len(), 1);

    // A new writer of a corrupt partition cannot restore: its appends fail, and keep
    // failing the same way. (The first store's writer, open since before the corruption,
    // would go on from its own heads: a foreign record does not change what it knows.)
    let fresh = KafkaEventStore::connect(options.clone())
        .await
        .expect("store");
    for _ in 0..2 {
        let err = fresh
            .append(
                T,
                &AggregateId::new(missing_id.as_str()),
                ExpectedVersion::Any,
                vec![added(&missing_id, 1, 2, &meta())],
            )
            .await
            .expect_err("the writer cannot restore");
        assert!(
            matches!(&err, Error::MalformedRecord { position: at, .. } if *at == position(missing_p, missing_at)),
            "{err:?}"
        );
    }

    // A processor over the corrupt log: the two corrupt partitions report their errors
    // and stay down, the healthy one serves commands.
    let processor = CommandProcessor::<Counter>::new(options.clone())
        .start()
        .await
        .expect("processor starts");
    assert!(
        eventually(Duration::from_secs(30), || {
            processor.live_partitions().contains(&healthy_p)
                && processor.partition_errors().len() == 2
        })
        .await,
        "{:?}",
        processor.partition_errors()
    );
    let errors = processor.partition_errors();
    assert!(
        errors
            .get(&missing_p)
            .is_some_and(|e| e.contains(&position(missing_p, missing_at).to_string())),
        "{errors:?}"
    );
    assert!(
        errors
            .get(&tampered_p)
            .is_some_and(|e| e.contains("hash chain broken")
                && e.contains(&position(tampered_p, tampered_at).to_string())),
        "{errors:?}"
    );
    assert!(!errors.contains_key(&healthy_p), "{errors:?}");
    assert_eq!(
        processor.live_partitions(),
        std::iter::once(healthy_p).collect()
    );
    let bus = CommandBus::<Counter>::connect(options.clone())
        .await
        .expect("bus");
    let done = bus
        .send_expecting(
            CounterCommand::Add {
                id: healthy_id.clone(),
                by: 2,
            },
            meta(),
            None,
        )
        .await
        .expect("the healthy partition serves");
    assert_eq!(done.version, Version(2));
    processor.shutdown().await;
    assert_eq!(annals_thread_panics(), 0, "no annals thread panicked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_append_too_big_for_a_kafka_record_is_refused_and_the_partition_goes_on() {
    let Some(brokers) = brokers() else { return };
    let store = KafkaEventStore::connect(fault_options(&brokers))
        .await
        .expect("store");
    let id = AggregateId::new("c-big");
    let mut big = added("c-big", 1, 1, &meta());
    // Under the payload limit, over the record limit once key and headers are added.
    big.payload.bytes = format!("\"{}\"", "x".repeat(999_900)).into_bytes();
    let err = store
        .append(T, &id, ExpectedVersion::NoStream, vec![big])
        .await
        .expect_err("too big for a record");
    assert!(
        matches!(&err, Error::InvalidRequest { reason, .. } if reason.contains("limit")),
        "{err:?}"
    );
    let stored = store
        .append(
            T,
            &id,
            ExpectedVersion::NoStream,
            vec![added("c-big", 1, 1, &meta())],
        )
        .await
        .expect("nothing was written; the partition goes on");
    assert_eq!(stored[0].sequence, Version(1));
}
