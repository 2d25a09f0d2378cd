//! Blue-green rebuilds: readers see the old complete model until the switch and the new
//! complete one after it; rebuilds abort, resume, and old versions drop.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use annals_projections::ops::{self, ReplayFrom};
use annals_projections::{Projection, ProjectionError, Projector, ProjectorOptions, read};
use sqlx::Row;

use crate::model::{Totals, expected_totals};
use crate::support::{Env, add, write_many};

fn fast() -> ProjectorOptions {
    ProjectorOptions::new()
        .batch_size(20)
        .batch_window(Duration::from_millis(10))
        .refresh_interval(Duration::from_millis(200))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_never_see_an_empty_or_half_built_model_during_a_rebuild() {
    let Some(env) = Env::new().await else { return };
    let ids: Vec<String> = (0..12).map(|i| format!("r-{i}")).collect();
    let written = write_many(&env.store, &ids, 25, 5).await;
    let old = expected_totals(&written, 1);
    let new = expected_totals(&written, 10);
    let sum = |m: &std::collections::BTreeMap<String, crate::model::Tally>| {
        (
            m.len() as i64,
            m.values().map(|t| t.total as i64).sum::<i64>(),
        )
    };
    let (old_state, new_state) = (sum(&old), sum(&new));

    let mut live = Projector::new(
        env.db().clone(),
        env.kafka.clone(),
        Projection::document(Totals::new()),
    )
    .options(fast())
    .start()
    .await
    .expect("starts");
    assert!(
        live.wait_for(Duration::from_secs(60), |p| p.caught_up())
            .await
            .expect("runs")
    );

    // A reader queries the live model in a loop for the whole rebuild.
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let pool = env.db().pool().clone();
        let stop = Arc::clone(&stop);
        tokio::spawn(async move {
            let mut seen = Vec::new();
            loop {
                let row = sqlx::query(
                    "SELECT count(*)::int8, coalesce(sum((doc->>'total')::int8), 0)::int8
                     FROM totals.documents",
                )
                .fetch_one(&pool)
                .await
                .expect("the reader can always query");
                let state: (i64, i64) = (row.get(0), row.get(1));
                if seen.last() != Some(&state) {
                    seen.push(state);
                }
                // Stop only once the new model was seen (or told to give up).
                if stop.load(Ordering::SeqCst)
                    && (seen.last() == Some(&new_state) || seen.len() > 50)
                {
                    return seen;
                }
                tokio::task::yield_now().await;
            }
        })
    };

    let rebuilt = Projection::document(Totals {
        factor: 10,
        ..Totals::new()
    });
    let mut updates = 0;
    let report = ops::rebuild(env.db(), &env.kafka, &rebuilt, fast(), |_| updates += 1)
        .await
        .expect("rebuilds");
    stop.store(true, Ordering::SeqCst);
    let seen = reader.await.expect("reader");
    assert_eq!(
        (report.version, report.previous, report.resumed),
        (2, 1, false)
    );
    assert_eq!(report.applied, written.len() as u64);
    assert!(updates > 0, "progress was reported");
    assert_eq!(
        seen,
        vec![old_state, new_state],
        "readers see the old complete model, then the new complete one, nothing between"
    );
    assert_eq!(
        read::documents::<Totals>(env.db()).await.expect("reads"),
        new
    );

    // The live projector follows the switch: its next events go to version 2.
    add(&env.store, "r-0", &[1]).await;
    assert!(
        live.wait_for(Duration::from_secs(30), |p| p.version == 2 && p.caught_up())
            .await
            .expect("live keeps running"),
        "live follows: {:?}",
        live.progress()
    );
    assert!(
        crate::support::eventually(Duration::from_secs(10), || async {
            read::document::<Totals>(env.db(), "r-0")
                .await
                .expect("reads")
                .is_some_and(|t| t.events == 26)
        })
        .await,
        "the event after the switch is in the new live version"
    );
    live.stop().await.expect("stops");

    // The old version is kept until dropped.
    let summary = ops::list(env.db()).await.expect("lists");
    assert_eq!(summary[0].versions, vec![1, 2]);
    ops::drop_version(env.db(), "totals", 1)
        .await
        .expect("drops v1");
    assert_eq!(
        ops::list(env.db()).await.expect("lists")[0].versions,
        vec![2]
    );
    // Offsets of the replayed-from version are gone too: a replay now targets v2.
    let replay = ops::replay(env.db(), &env.kafka, "totals", ReplayFrom::Offset(0))
        .await
        .expect("replays");
    assert_eq!(replay.version, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebuilds_abort_and_resume_and_versions_are_never_reused() {
    let Some(env) = Env::new().await else { return };
    let written = write_many(&env.store, &["a".to_owned(), "b".to_owned()], 10, 5).await;
    let projection = Projection::document(Totals::new());
    // Registering happens when a projector starts; run one to the end.
    let mut live = Projector::new(env.db().clone(), env.kafka.clone(), projection.clone())
        .options(fast())
        .start()
        .await
        .expect("starts");
    assert!(
        live.wait_for(Duration::from_secs(60), |p| p.caught_up())
            .await
            .expect("runs")
    );
    live.stop().await.expect("stops");

    assert_eq!(
        ops::begin_rebuild(env.db(), &projection)
            .await
            .expect("begins"),
        (2, false)
    );
    assert_eq!(
        ops::begin_rebuild(env.db(), &projection)
            .await
            .expect("finds it"),
        (2, true)
    );
    assert_eq!(
        ops::abort_rebuild(env.db(), "totals")
            .await
            .expect("aborts"),
        2
    );
    assert!(matches!(
        ops::abort_rebuild(env.db(), "totals").await,
        Err(ProjectionError::NoRebuild { .. })
    ));
    let summary = &ops::list(env.db()).await.expect("lists")[0];
    assert_eq!((summary.live_version, summary.building_version), (1, None));
    assert_eq!(
        summary.versions,
        vec![1],
        "the aborted version's schema is dropped"
    );

    assert_eq!(
        ops::begin_rebuild(env.db(), &projection)
            .await
            .expect("begins"),
        (3, false)
    );
    let report = ops::rebuild(env.db(), &env.kafka, &projection, fast(), |_| {})
        .await
        .expect("resumes and finishes");
    assert_eq!((report.version, report.resumed), (3, true));
    assert_eq!(
        read::documents::<Totals>(env.db()).await.expect("reads"),
        expected_totals(&written, 1)
    );
    assert!(matches!(
        ops::drop_version(env.db(), "totals", 3).await,
        Err(ProjectionError::Version {
            reason: "is live",
            ..
        })
    ));
}
