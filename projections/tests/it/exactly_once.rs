//! Exactly-once effect: crashes between the writes and the commit, and zombies whose
//! compare-and-set fails, leave the read model equal to a clean fold, row for row.

use std::time::Duration;

use annals_projections::{Projection, Projector, ProjectorOptions, read};

use crate::model::{Totals, expected_totals};
use crate::support::{Env, covers, write_many};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crashes_between_write_and_commit_lose_and_double_nothing() {
    let Some(env) = Env::new().await else { return };
    let ids: Vec<String> = (0..6).map(|i| format!("c-{i}")).collect();
    let written = write_many(&env.store, &ids, 40, 4).await;

    // Every second batch transaction is rolled back after its writes, as a crash just
    // before the commit would; the runner applies it again.
    let mut projector = Projector::new(
        env.db().clone(),
        env.kafka.clone(),
        Projection::document(Totals::new()),
    )
    .options(
        ProjectorOptions::new()
            .batch_size(7)
            .batch_window(Duration::from_millis(10))
            .fail_before_commit_every(2),
    )
    .start()
    .await
    .expect("starts");
    assert!(
        projector
            .wait_for(Duration::from_secs(60), |p| p.caught_up())
            .await
            .expect("the projector keeps running"),
        "caught up: {:?}",
        projector.progress()
    );
    let progress = projector.progress();
    projector.stop().await.expect("stops cleanly");
    assert_eq!(progress.applied, written.len() as u64);

    let documents = read::documents::<Totals>(env.db()).await.expect("reads");
    assert_eq!(documents, expected_totals(&written, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zombie_runners_that_both_consume_every_partition_apply_each_event_once() {
    let Some(env) = Env::new().await else { return };
    // Two runners in different groups both believe they own every partition, which is
    // what a zombie after a rebalance believes. Only the compare-and-set keeps them from
    // applying events twice; `Totals` fails on any event out of sequence.
    let start = |group: &str| {
        Projector::new(
            env.db().clone(),
            env.kafka.clone(),
            Projection::document(Totals::new()),
        )
        .options(
            ProjectorOptions::new()
                .group(group)
                .batch_size(5)
                .batch_window(Duration::from_millis(5)),
        )
        .start()
    };
    let mut a = start("zombie-a").await.expect("a starts");
    let mut b = start("zombie-b").await.expect("b starts");

    let ids: Vec<String> = (0..5).map(|i| format!("z-{i}")).collect();
    let mut written = Vec::new();
    for round in 0..4 {
        written.extend(write_many(&env.store, &ids, 10, 3 + round).await);
    }
    for (name, handle) in [("a", &mut a), ("b", &mut b)] {
        assert!(
            handle
                .wait_for(Duration::from_secs(60), |p| p.caught_up()
                    && covers(p, &written))
                .await
                .unwrap_or_else(|e| panic!("runner {name} failed: {e:#?}")),
            "runner {name} caught up: {:?}",
            handle.progress()
        );
    }
    let (by_a, by_b) = (a.progress().applied, b.progress().applied);
    eprintln!("zombie runners applied {by_a} and {by_b} events");
    let applied = by_a + by_b;
    a.stop().await.expect("a stops cleanly");
    b.stop().await.expect("b stops cleanly");
    assert_eq!(
        applied,
        written.len() as u64,
        "each event applied by exactly one runner"
    );
    let documents = read::documents::<Totals>(env.db()).await.expect("reads");
    assert_eq!(documents, expected_totals(&written, 1));
}
