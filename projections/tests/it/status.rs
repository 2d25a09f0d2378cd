//! Status for operators, and clear errors on bad input.

use std::time::Duration;

use annals_projections::ops::{self, ReplayFrom};
use annals_projections::{Database, Projection, ProjectionError, Projector, ProjectorOptions};

use crate::model::Totals;
use crate::support::{Env, TestDb, write_many};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_offsets_heads_lag_and_rates_per_partition() {
    let Some(env) = Env::new().await else { return };
    let ids: Vec<String> = (0..6).map(|i| format!("s-{i}")).collect();
    let written = write_many(&env.store, &ids, 10, 5).await;
    let mut projector = Projector::new(
        env.db().clone(),
        env.kafka.clone(),
        Projection::document(Totals::new()),
    )
    .options(ProjectorOptions::new().batch_window(Duration::from_millis(10)))
    .start()
    .await
    .expect("starts");
    assert!(
        projector
            .wait_for(Duration::from_secs(60), |p| p.caught_up())
            .await
            .expect("runs")
    );

    let status = ops::status(env.db(), Some(&env.kafka), "totals")
        .await
        .expect("status");
    projector.stop().await.expect("stops");
    assert_eq!(status.summary.kind, "document");
    assert_eq!(status.summary.live_version, 1);
    assert_eq!(
        status.summary.topics,
        vec![env.kafka.events_topic("counter")]
    );
    assert_eq!(status.heads_error, None);
    assert_eq!(status.partitions.len(), 3);
    for p in &status.partitions {
        let last = written
            .iter()
            .filter_map(|e| e.position.as_ref())
            .filter(|pos| pos.partition.0 == p.partition)
            .map(|pos| pos.offset.0)
            .max();
        if let Some(last) = last {
            assert_eq!(p.next_offset, Some(last + 1), "{p:?}");
            assert!(p.head.is_some(), "{p:?}");
        }
        assert!(p.lag.is_some());
    }
    assert!(status.events_per_sec >= 0.0);

    let without_kafka = ops::status(env.db(), None, "totals").await.expect("status");
    assert!(without_kafka.heads_error.is_some());
    assert!(without_kafka.partitions.iter().all(|p| p.head.is_none()));
}

#[tokio::test]
async fn bad_input_gives_typed_errors() {
    let Some(test_db) = TestDb::create().await else {
        return;
    };
    assert!(matches!(
        ops::status(&test_db.db, None, "nope").await,
        Err(ProjectionError::UnknownProjection { name }) if name == "nope"
    ));
    assert!(matches!(
        annals_projections::dead_letters::dead_letters(&test_db.db, "nope", true).await,
        Err(ProjectionError::UnknownProjection { .. })
    ));
    assert!(ops::list(&test_db.db).await.expect("lists").is_empty());

    let unreachable = Database::connect("postgres://postgres@127.0.0.1:1/annals").await;
    match unreachable {
        Err(e @ ProjectionError::DatabaseUnavailable { .. }) => {
            assert!(e.is_transient());
            assert!(e.to_string().contains("127.0.0.1:1"), "{e}");
        }
        other => panic!("expected an unavailable database, got {other:?}"),
    }

    assert_eq!("earliest".parse(), Ok(ReplayFrom::Earliest));
    assert_eq!("offset:42".parse(), Ok(ReplayFrom::Offset(42)));
    assert!(matches!(
        "time:2026-01-02T03:04:05Z".parse(),
        Ok(ReplayFrom::Time(_))
    ));
    assert!("offset:-1".parse::<ReplayFrom>().is_err());
    assert!("time:yesterday".parse::<ReplayFrom>().is_err());
    assert!("latest".parse::<ReplayFrom>().is_err());
}
