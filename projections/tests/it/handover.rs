//! Two projector instances in one group share the partitions; when one stops
//! mid-stream the other takes its partitions over with no gap and no double.

use std::collections::BTreeSet;
use std::time::Duration;

use annals_projections::{Projection, Projector, ProjectorOptions};
use sqlx::Row;

use crate::model::Ledger;
use crate::support::{Env, add, covers};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_instance_hands_over_without_gap_or_double() {
    let Some(env) = Env::new().await else { return };
    // Strict: a second insert of a position fails, halting the projection.
    let projection = Projection::sql(Ledger {
        strict: true,
        ..Ledger::default()
    });
    let options = ProjectorOptions::new()
        .group("handover")
        .batch_size(10)
        .batch_window(Duration::from_millis(10));
    let start = || {
        Projector::new(env.db().clone(), env.kafka.clone(), projection.clone())
            .options(options.clone())
            .start()
    };
    let mut a = start().await.expect("a starts");
    assert!(
        a.wait_for(Duration::from_secs(30), |p| p.partitions.len() == 3)
            .await
            .expect("a runs")
    );

    let store = env.store.clone();
    let writer = tokio::spawn(async move {
        let mut written = Vec::new();
        for round in 0..60u32 {
            let id = format!("h-{}", round % 9);
            written.extend(add(&store, &id, &[round % 5 + 1, 2]).await);
        }
        written
    });

    let mut b = start().await.expect("b starts");
    assert!(
        b.wait_for(Duration::from_secs(30), |p| !p.partitions.is_empty())
            .await
            .expect("b runs"),
        "b got partitions"
    );
    // Stop a while the writer is still writing.
    a.stop().await.expect("a stops cleanly");
    let written = writer.await.expect("writer");
    assert!(
        b.wait_for(Duration::from_secs(60), |p| p.caught_up()
            && covers(p, &written))
            .await
            .expect("b keeps running"),
        "b took every partition over and caught up: {:?}",
        b.progress()
    );
    b.stop().await.expect("b stops cleanly");

    let rows = sqlx::query("SELECT topic, partition, \"offset\" FROM ledger.entries")
        .fetch_all(env.db().pool())
        .await
        .expect("reads");
    let applied: Vec<(String, i32, i64)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    let expected: BTreeSet<(String, i32, i64)> = written
        .iter()
        .map(|e| {
            let p = e.position.clone().expect("position");
            (
                p.topic,
                i32::try_from(p.partition.0).expect("small"),
                i64::try_from(p.offset.0).expect("small"),
            )
        })
        .collect();
    assert_eq!(
        applied.len(),
        expected.len(),
        "no event applied twice or lost"
    );
    assert_eq!(applied.into_iter().collect::<BTreeSet<_>>(), expected);
}
