//! Replays from the earliest record, an offset and a time: projectors seek by
//! themselves, and handlers see the events they saw before as replays.

use std::sync::atomic::Ordering;
use std::time::Duration;

use annals_projections::ops::{self, ReplayFrom, TimeLookup};
use annals_projections::{Projection, ProjectionError, Projector, ProjectorOptions};

use crate::model::Ledger;
use crate::support::{Env, add, eventually};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replays_from_earliest_an_offset_and_a_time_suppress_side_effects() {
    let Some(env) = Env::new().await else { return };
    let ledger = Ledger::default();
    let mut first = Vec::new();
    for i in 0..6u32 {
        first.extend(add(&env.store, &format!("l-{}", i % 3), &[i + 1]).await);
    }
    let mut projector = Projector::new(
        env.db().clone(),
        env.kafka.clone(),
        Projection::sql(ledger.clone()),
    )
    .options(
        ProjectorOptions::new()
            .batch_window(Duration::from_millis(10))
            .refresh_interval(Duration::from_millis(200)),
    )
    .start()
    .await
    .expect("starts");
    assert!(
        projector
            .wait_for(Duration::from_secs(60), |p| p.caught_up())
            .await
            .expect("runs")
    );
    assert_eq!(ledger.side_effects.load(Ordering::SeqCst), 6);
    assert_eq!(ledger.replayed.load(Ordering::SeqCst), 0);

    // Earliest: every event again, all as replays; the idle projector notices by itself.
    let report = ops::replay(env.db(), &env.kafka, "ledger", ReplayFrom::Earliest)
        .await
        .expect("replays");
    assert_eq!(report.version, 1);
    assert!(report.partitions.iter().all(|(_, _, _, to)| *to == 0));
    assert!(
        eventually(Duration::from_secs(30), || async {
            ledger.replayed.load(Ordering::SeqCst) == 6
        })
        .await,
        "replayed {}",
        ledger.replayed.load(Ordering::SeqCst)
    );
    assert_eq!(
        ledger.side_effects.load(Ordering::SeqCst),
        6,
        "no side effect twice"
    );

    // An offset: the events at or after it in each partition.
    let from = 2;
    let expected_again = first
        .iter()
        .filter(|e| e.position.as_ref().is_some_and(|p| p.offset.0 >= from))
        .count() as u64;
    ops::replay(env.db(), &env.kafka, "ledger", ReplayFrom::Offset(from))
        .await
        .expect("replays");
    assert!(
        eventually(Duration::from_secs(30), || async {
            ledger.replayed.load(Ordering::SeqCst) == 6 + expected_again
        })
        .await,
        "replayed {} of {}",
        ledger.replayed.load(Ordering::SeqCst),
        6 + expected_again
    );

    // A time: only the events written after it. New events are not replays.
    tokio::time::sleep(Duration::from_millis(20)).await; // a distinct millisecond
    let cut = chrono::Utc::now();
    let mut later = Vec::new();
    for i in 0..3u32 {
        later.extend(add(&env.store, &format!("l-{i}"), &[10]).await);
    }
    assert!(
        eventually(Duration::from_secs(30), || async {
            ledger.side_effects.load(Ordering::SeqCst) == 9
        })
        .await,
        "new events are applied live"
    );
    let before = ledger.replayed.load(Ordering::SeqCst);
    let report = ops::replay(env.db(), &env.kafka, "ledger", ReplayFrom::Time(cut))
        .await
        .expect("replays");
    assert!(report.time_lookup.is_some());
    if report.time_lookup == Some(TimeLookup::ScannedEvents) {
        eprintln!("NOTE: the broker cannot look offsets up by time; the replay scanned events");
    }
    for e in &later {
        let p = e.position.as_ref().expect("position");
        let (_, _, _, to) = report
            .partitions
            .iter()
            .find(|(_, partition, _, _)| *partition == p.partition.0)
            .expect("partition");
        assert!(
            *to <= p.offset.0,
            "the replay starts at or before every later event"
        );
    }
    assert!(
        eventually(Duration::from_secs(30), || async {
            ledger.replayed.load(Ordering::SeqCst) == before + 3
        })
        .await,
        "replayed {} (expected {})",
        ledger.replayed.load(Ordering::SeqCst),
        before + 3
    );
    assert_eq!(ledger.side_effects.load(Ordering::SeqCst), 9);
    projector.stop().await.expect("stops");

    assert!(matches!(
        ops::replay(env.db(), &env.kafka, "nope", ReplayFrom::Earliest).await,
        Err(ProjectionError::UnknownProjection { .. })
    ));
}
