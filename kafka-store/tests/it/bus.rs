//! The command bus end to end: processor, events, replies, deduplication.

use std::time::Duration;

use annals_core::{
    Actor, AggregateId, AggregateRepository, CommandError, CommandId, Error, EventStore,
    ExpectedVersion, Metadata, Version,
};
use annals_kafka_store::{CommandBus, CommandProcessor, KafkaEventStore};

use crate::model::{Counter, CounterCommand, CounterEvent, CounterRejection, LIMIT};
use crate::support::{brokers, isolated_options};

fn meta() -> Metadata {
    Metadata::new(Actor::new("user:test"), CommandId(uuid::Uuid::now_v7()))
}

fn add(id: &str, by: u32) -> CounterCommand {
    CounterCommand::Add { id: id.into(), by }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_become_events_with_outcomes_and_retries_are_idempotent() {
    let Some(brokers) = brokers() else { return };
    let options = isolated_options(&brokers).session_timeout(Duration::from_secs(2));
    let processor = CommandProcessor::<Counter>::new(options.clone())
        .start()
        .await
        .expect("processor starts");
    assert!(
        processor
            .wait_for(Duration::from_secs(30), |live| live.len() == 3)
            .await,
        "the only processor owns all partitions: {:?}",
        processor.partition_errors()
    );
    let bus = CommandBus::<Counter>::connect(options.clone())
        .await
        .expect("bus connects");

    let done = bus
        .send_expecting(add("c-1", 5), meta(), None)
        .await
        .expect("first");
    assert_eq!(done.version, Version(1));
    assert_eq!(
        done.events[0].payload,
        CounterEvent::Added { by: 5, total: 5 }
    );
    assert!(done.events[0].position.is_some());

    // A retry with the same command id returns the first outcome and writes nothing.
    let m = meta();
    let first = bus
        .send_expecting(add("c-1", 2), m.clone(), None)
        .await
        .expect("second");
    let retry = bus
        .send_expecting(add("c-1", 2), m, None)
        .await
        .expect("retry");
    assert_eq!(first.events[0].event_id, retry.events[0].event_id);
    assert_eq!(retry.version, Version(2));

    let rejected = bus
        .send_expecting(
            add("c-1", u32::try_from(LIMIT).expect("fits")),
            meta(),
            None,
        )
        .await
        .expect_err("over the limit");
    assert!(matches!(
        rejected,
        CommandError::Rejected(CounterRejection::OverLimit { .. })
    ));

    let conflict = bus
        .send_expecting(
            add("c-1", 1),
            meta(),
            Some(ExpectedVersion::Exact(Version(7))),
        )
        .await
        .expect_err("stale version");
    assert!(
        matches!(
            conflict,
            CommandError::Store(Error::Conflict {
                actual: Version(2),
                ..
            })
        ),
        "{conflict:?}"
    );

    // The log holds exactly the two events, readable by any EventStore client.
    let store = KafkaEventStore::connect(options.clone())
        .await
        .expect("store");
    let repo = AggregateRepository::<Counter>::new(std::sync::Arc::new(store));
    let loaded = repo.load(&AggregateId::new("c-1")).await.expect("load");
    assert_eq!(loaded.version, Version(2));
    assert_eq!(loaded.state.total, 7);
    processor.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_commands_get_typed_errors_and_nothing_is_written() {
    let Some(brokers) = brokers() else { return };
    let options = isolated_options(&brokers)
        .session_timeout(Duration::from_secs(2))
        .max_payload_bytes(10_000)
        .command_timeout(Duration::from_secs(20));
    let processor = CommandProcessor::<Counter>::new(options.clone())
        .start()
        .await
        .expect("processor starts");
    let bus = CommandBus::<Counter>::connect(options.clone())
        .await
        .expect("bus connects");

    let oversized = bus
        .send_expecting(
            CounterCommand::Note {
                id: "c-1".into(),
                text: "x".repeat(20_000),
            },
            meta(),
            None,
        )
        .await
        .expect_err("too big");
    assert!(
        matches!(&oversized, CommandError::Store(Error::InvalidRequest { reason, .. }) if reason.contains("limit")),
        "{oversized:?}"
    );
    let empty_id = bus
        .send_expecting(add("", 1), meta(), None)
        .await
        .expect_err("no aggregate id");
    assert!(
        matches!(&empty_id, CommandError::Store(Error::InvalidRequest { .. })),
        "{empty_id:?}"
    );
    let store = KafkaEventStore::connect(options.clone())
        .await
        .expect("store");
    for p in 0..3 {
        let n = futures::StreamExt::count(store.read_partition(
            "counter",
            annals_core::Partition(p),
            annals_core::Offset(0),
        ))
        .await;
        assert_eq!(n, 0, "nothing was written to partition {p}");
    }
    processor.shutdown().await;
}
