//! Poison events: parked per key (later events of the key behind them, other keys going
//! on) and retried exactly once after the fix; or halting the projection; never skipped.

use std::sync::atomic::Ordering;
use std::time::Duration;

use annals_core::{
    Actor, AggregateId, CommandId, EventId, EventStore, ExpectedVersion, Metadata, RawPayload,
    UncommittedEvent,
};
use annals_projections::dead_letters::{self, DeadLetterState};
use annals_projections::{
    PoisonPolicy, Projection, ProjectionError, Projector, ProjectorOptions, ops, read,
};
use sqlx::Row;

use crate::model::{Ledger, Tally, Totals};
use crate::support::{Env, add};

fn options(policy: PoisonPolicy) -> ProjectorOptions {
    ProjectorOptions::new()
        .batch_size(50)
        .batch_window(Duration::from_millis(10))
        .retries(2)
        .retry_backoff(Duration::from_millis(5))
        .poison_policy(policy)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parked_event_holds_back_its_key_only_and_is_retried_once_after_the_fix() {
    let Some(env) = Env::new().await else { return };
    let totals = Totals::new();
    totals.broken.store(true, Ordering::SeqCst);
    let projection = Projection::document(totals.clone());
    add(&env.store, "a", &[1]).await;
    add(&env.store, "a", &[13]).await;
    add(&env.store, "b", &[3]).await;
    add(&env.store, "a", &[2]).await;
    add(&env.store, "b", &[4]).await;

    let mut projector = Projector::new(env.db().clone(), env.kafka.clone(), projection.clone())
        .options(options(PoisonPolicy::Park))
        .start()
        .await
        .expect("starts");
    assert!(
        projector
            .wait_for(Duration::from_secs(60), |p| p.caught_up())
            .await
            .expect("runs")
    );
    assert_eq!(projector.progress().parked, 2);

    let tally = |total, events, last_sequence| Tally {
        total,
        events,
        last_sequence,
    };
    let doc = |id: &'static str| {
        let db = env.db().clone();
        async move { read::document::<Totals>(&db, id).await.expect("reads") }
    };
    assert_eq!(
        doc("a").await,
        Some(tally(1, 1, 1)),
        "a stops before its poison event"
    );
    assert_eq!(doc("b").await, Some(tally(7, 2, 2)), "other keys go on");

    let parked = dead_letters::dead_letters(env.db(), "totals", false)
        .await
        .expect("lists");
    assert_eq!(parked.len(), 2);
    assert_eq!(
        (
            parked[0].key.as_str(),
            parked[0].behind,
            parked[0].sequence.0
        ),
        ("a", false, 2)
    );
    assert!(parked[0].error.contains("unlucky"), "{}", parked[0].error);
    assert_eq!(
        (
            parked[1].key.as_str(),
            parked[1].behind,
            parked[1].sequence.0
        ),
        ("a", true, 3)
    );
    assert_eq!(ops::list(env.db()).await.expect("lists")[0].parked, 2);

    // Retrying before the fix fails again and changes nothing.
    let again = dead_letters::retry_dead_letter(
        env.db(),
        &projection,
        parked[0].id,
        &options(PoisonPolicy::Park),
    )
    .await;
    assert!(
        matches!(again, Err(ProjectionError::RetryFailed { .. })),
        "{again:?}"
    );
    assert_eq!(doc("a").await, Some(tally(1, 1, 1)));

    // The fix: the same projection code no longer fails. The retry applies both parked
    // events of `a`, in order, once.
    totals.broken.store(false, Ordering::SeqCst);
    let applied = dead_letters::retry_dead_letter(
        env.db(),
        &projection,
        parked[1].id,
        &options(PoisonPolicy::Park),
    )
    .await
    .expect("retries");
    assert_eq!(applied, vec![parked[0].id, parked[1].id]);
    assert_eq!(doc("a").await, Some(tally(16, 3, 3)));
    assert!(matches!(
        dead_letters::retry_dead_letter(
            env.db(),
            &projection,
            parked[0].id,
            &options(PoisonPolicy::Park)
        )
        .await,
        Err(ProjectionError::DeadLetterResolved { .. })
    ));
    let all = dead_letters::dead_letters(env.db(), "totals", true)
        .await
        .expect("lists");
    assert!(all.iter().all(|d| d.state == DeadLetterState::Retried));

    // `a` is no longer held back: its next event applies normally.
    add(&env.store, "a", &[5]).await;
    assert!(
        crate::support::eventually(Duration::from_secs(30), || async {
            doc("a").await == Some(tally(21, 4, 4))
        })
        .await,
        "a's next event applies: {:?}",
        doc("a").await
    );
    projector.stop().await.expect("stops cleanly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_event_halts_the_projection_at_its_offset_under_the_halt_policy() {
    let Some(env) = Env::new().await else { return };
    let totals = Totals::new();
    totals.broken.store(true, Ordering::SeqCst);
    let first = add(&env.store, "a", &[1]).await;
    let poison = add(&env.store, "a", &[13, 2]).await;

    let projector = Projector::new(
        env.db().clone(),
        env.kafka.clone(),
        Projection::document(totals),
    )
    .options(options(PoisonPolicy::Halt))
    .start()
    .await
    .expect("starts");
    let halted = tokio::time::timeout(Duration::from_secs(60), projector.join())
        .await
        .expect("halts in time");
    let at = poison[0].position.clone().expect("position");
    match halted {
        Err(ProjectionError::PoisonHalted { position, key, .. }) => {
            assert_eq!((position, key.as_str()), (at.clone(), "a"));
        }
        other => panic!("expected a halt, got {other:?}"),
    }
    let status = ops::status(env.db(), Some(&env.kafka), "totals")
        .await
        .expect("status");
    let partition = status
        .partitions
        .iter()
        .find(|p| p.partition == at.partition.0)
        .expect("the partition");
    assert_eq!(
        partition.next_offset,
        Some(at.offset.0),
        "the offset stays at the poison event"
    );
    assert!(first[0].position.as_ref().expect("position").offset.0 < at.offset.0);
    assert!(
        status
            .summary
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("poison"))
    );
    assert_eq!(
        read::document::<Totals>(env.db(), "a")
            .await
            .expect("reads"),
        Some(Tally {
            total: 1,
            events: 1,
            last_sequence: 1
        })
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_sql_handlers_are_retried_then_parked_and_the_batch_goes_on() {
    let Some(env) = Env::new().await else { return };
    let ledger = Ledger::default();
    ledger.broken.store(true, Ordering::SeqCst);
    let projection = Projection::sql(ledger.clone());
    add(&env.store, "x", &[1, 13, 2]).await;
    add(&env.store, "y", &[3]).await;
    let mut projector = Projector::new(env.db().clone(), env.kafka.clone(), projection.clone())
        .options(options(PoisonPolicy::Park))
        .start()
        .await
        .expect("starts");
    assert!(
        projector
            .wait_for(Duration::from_secs(60), |p| p.caught_up())
            .await
            .expect("runs")
    );
    projector.stop().await.expect("stops");
    let rows: Vec<(String, i64)> = sqlx::query(
        "SELECT aggregate_id, amount FROM ledger.entries ORDER BY aggregate_id, sequence",
    )
    .fetch_all(env.db().pool())
    .await
    .expect("reads")
    .iter()
    .map(|r| (r.get(0), r.get(1)))
    .collect();
    assert_eq!(rows, vec![("x".to_owned(), 1), ("y".to_owned(), 3)]);
    let parked = dead_letters::dead_letters(env.db(), "ledger", false)
        .await
        .expect("lists");
    assert_eq!(parked.len(), 2);
    assert_eq!(parked[0].attempts, 3, "one try and two retries");

    // Skipping the poison event releases nothing by itself: the one behind stays parked.
    dead_letters::skip_dead_letter(env.db(), "ledger", parked[0].id)
        .await
        .expect("skips");
    let left = dead_letters::dead_letters(env.db(), "ledger", false)
        .await
        .expect("lists");
    assert_eq!(left.len(), 1);
    let applied = dead_letters::retry_dead_letter(
        env.db(),
        &projection,
        left[0].id,
        &options(PoisonPolicy::Park),
    )
    .await
    .expect("retries");
    assert_eq!(applied, vec![left[0].id]);
    let amounts: Vec<i64> = sqlx::query_scalar(
        "SELECT amount FROM ledger.entries WHERE aggregate_id = 'x' ORDER BY sequence",
    )
    .fetch_all(env.db().pool())
    .await
    .expect("reads");
    assert_eq!(amounts, vec![1, 2], "the skipped event is never applied");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_that_does_not_decode_halts_naming_its_position() {
    let Some(env) = Env::new().await else { return };
    add(&env.store, "a", &[1]).await;
    let unknown = UncommittedEvent {
        event_id: EventId(uuid::Uuid::now_v7()),
        event_type: "CounterExploded".to_owned(),
        schema_version: 1,
        occurred_at: chrono::Utc::now(),
        metadata: Metadata::new(Actor::new("user:test"), CommandId(uuid::Uuid::now_v7())),
        payload: RawPayload {
            content_type: "application/json".to_owned(),
            bytes: b"{}".to_vec(),
        },
    };
    let stored = env
        .store
        .append(
            "counter",
            &AggregateId::new("a"),
            ExpectedVersion::Any,
            vec![unknown],
        )
        .await
        .expect("appends");
    let projector = Projector::new(
        env.db().clone(),
        env.kafka.clone(),
        Projection::document(Totals::new()),
    )
    .options(options(PoisonPolicy::Park))
    .start()
    .await
    .expect("starts");
    let halted = tokio::time::timeout(Duration::from_secs(60), projector.join())
        .await
        .expect("halts in time");
    match halted {
        Err(ProjectionError::Decode { source, .. }) => {
            let at = stored[0].position.clone().expect("position");
            assert!(source.to_string().contains(&at.to_string()), "{source}");
        }
        other => panic!("expected a decode halt, got {other:?}"),
    }
    assert_eq!(
        read::document::<Totals>(env.db(), "a")
            .await
            .expect("reads"),
        Some(Tally {
            total: 1,
            events: 1,
            last_sequence: 1
        })
    );
}
