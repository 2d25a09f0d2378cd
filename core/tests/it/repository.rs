//! The typed write path on the memory store.

use std::sync::Arc;

use annals_core::{
    Actor, Aggregate, AggregateId, AggregateRepository, Clock, Command, CommandContext,
    CommandError, CommandId, DomainEvent, Error, EventStore, ExpectedVersion, ManualClock,
    MemoryEventStore, Metadata, SequentialIds, Version,
};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, DomainEvent)]
enum CounterEvent {
    #[event(name = "CounterIncremented", version = 1)]
    Incremented { by: u32 },
}

#[derive(Debug, Clone, Serialize, Deserialize, Command)]
enum CounterCommand {
    Increment {
        #[aggregate_id]
        id: String,
        by: u32,
    },
}

#[derive(Debug, PartialEq, Serialize, Deserialize, thiserror::Error)]
enum CounterRejection {
    #[error("would pass the limit of 10")]
    TooHigh,
}

#[derive(Debug, Default, Serialize, Deserialize, Aggregate)]
#[aggregate(name = "counter", command = CounterCommand, event = CounterEvent, rejection = CounterRejection)]
struct Counter {
    value: u32,
}

impl Counter {
    fn handle(
        &self,
        command: &CounterCommand,
        _: &CommandContext,
    ) -> Result<Vec<CounterEvent>, CounterRejection> {
        let CounterCommand::Increment { by, .. } = command;
        if self.value + by > 10 {
            return Err(CounterRejection::TooHigh);
        }
        Ok(vec![CounterEvent::Incremented { by: *by }])
    }

    fn apply(&mut self, event: &CounterEvent) {
        let CounterEvent::Incremented { by } = event;
        self.value += by;
    }
}

fn meta() -> Metadata {
    Metadata::new(Actor::new("user:test"), CommandId(uuid::Uuid::now_v7()))
}

fn inc(by: u32) -> CounterCommand {
    CounterCommand::Increment {
        id: "c-1".into(),
        by,
    }
}

fn repo() -> AggregateRepository<Counter> {
    AggregateRepository::new(Arc::new(MemoryEventStore::new()))
}

#[tokio::test]
async fn commands_store_events_and_loads_replay_them() {
    let clock = Arc::new(ManualClock::new(
        chrono::DateTime::from_timestamp(1_800_000_000, 0).expect("valid"),
    ));
    let repo = repo()
        .with_clock(clock.clone())
        .with_ids(Arc::new(SequentialIds::new()));
    let m = meta();
    let done = repo.execute(inc(3), m.clone()).await.expect("first");
    assert_eq!(done.version, Version(1));
    assert_eq!(done.events[0].payload, CounterEvent::Incremented { by: 3 });
    assert_eq!(done.events[0].metadata, m);
    assert_eq!(done.events[0].occurred_at, clock.now());
    repo.execute(inc(4), meta()).await.expect("second");
    let loaded = repo.load(&AggregateId::new("c-1")).await.expect("load");
    assert_eq!(loaded.version, Version(2));
    assert_eq!(loaded.state.value, 7);
}

#[tokio::test]
async fn a_rejection_is_typed_and_stores_nothing() {
    let repo = repo();
    repo.execute(inc(8), meta()).await.expect("ok");
    let err = repo.execute(inc(5), meta()).await.expect_err("too high");
    assert!(matches!(
        err,
        CommandError::Rejected(CounterRejection::TooHigh)
    ));
    let loaded = repo.load(&AggregateId::new("c-1")).await.expect("load");
    assert_eq!(loaded.version, Version(1));
}

#[tokio::test]
async fn a_wrong_expected_version_is_a_typed_conflict() {
    let repo = repo();
    repo.execute(inc(1), meta()).await.expect("ok");
    let err = repo
        .execute_expecting(inc(1), ExpectedVersion::Exact(Version(3)), meta())
        .await
        .expect_err("stale");
    match err {
        CommandError::Store(Error::Conflict {
            aggregate,
            expected,
            actual,
        }) => {
            assert_eq!(aggregate.aggregate_type, Counter::TYPE);
            assert_eq!(aggregate.aggregate_id, AggregateId::new("c-1"));
            assert_eq!(expected, ExpectedVersion::Exact(Version(3)));
            assert_eq!(actual, Version(1));
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
}

#[tokio::test]
async fn concurrent_commands_are_decided_again_after_a_conflict() {
    let store: Arc<dyn EventStore> = Arc::new(MemoryEventStore::new());
    let repo = AggregateRepository::<Counter>::new(store).with_conflict_retries(20);
    let runs = (0..10).map(|_| {
        let repo = repo.clone();
        tokio::spawn(async move { repo.execute(inc(1), meta()).await })
    });
    for r in futures::future::join_all(runs).await {
        r.expect("task").expect("every increment lands");
    }
    let loaded = repo.load(&AggregateId::new("c-1")).await.expect("load");
    assert_eq!(loaded.state.value, 10);
    assert_eq!(loaded.version, Version(10));
}

#[tokio::test]
async fn a_command_past_its_deadline_is_refused_and_stores_nothing() {
    let start = chrono::DateTime::from_timestamp(1_800_000_000, 0).expect("valid");
    let clock = Arc::new(ManualClock::new(start));
    let repo = repo().with_clock(clock.clone());
    let deadline = start + chrono::TimeDelta::seconds(5);
    let m = meta().with_deadline(deadline);
    assert_eq!(m.deadline(), Some(deadline));
    repo.execute(inc(1), m.clone()).await.expect("in time");
    clock.advance(chrono::TimeDelta::seconds(6));
    let err = repo
        .execute(inc(1), meta().with_deadline(deadline))
        .await
        .expect_err("too late");
    assert!(
        matches!(err, CommandError::Store(Error::DeadlinePassed { deadline: d, .. }) if d == deadline),
        "{err:?}"
    );
    let loaded = repo.load(&AggregateId::new("c-1")).await.expect("load");
    assert_eq!(
        loaded.version,
        Version(1),
        "the late command stored nothing"
    );
}
